"""Limits of API keys and users: the flags, the request body, how they print.

``keys limits`` and ``users limits`` change only the limits given as flags and
keep the others (the API replaces all five, so the current ones are read first);
``none`` lifts one limit, ``--clear`` all of them. Lifting the token budget
lifts its period too.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli._commands._context import Context, say
from cli._errors import UsageError
from cli._output import Column, Row

# Flag destinations, named as the API's fields.
LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "token_budget", "budget_period")
PERIODS = ("day", "month")


def limit_value(text: str) -> int | None:
    """A limit flag's value: a whole number >= 1, or ``none`` (unlimited)."""
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (or 'none'): {text}")
    return value


def given_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The limit flags on the command line (the parser leaves absent ones out)."""
    given = {field: getattr(args, field) for field in LIMIT_FIELDS if hasattr(args, field)}
    if "token_budget" in given and given["token_budget"] is None:
        given["budget_period"] = None
    return given


def merged_limits(current: Row, args: argparse.Namespace) -> dict[str, Any]:
    """``current``'s limits (none with ``--clear``) with the given flags applied."""
    given = given_limits(args)
    if not given and not args.clear:
        flags = ", ".join("--" + field.replace("_", "-") for field in LIMIT_FIELDS)
        raise UsageError(f"nothing to change: pass {flags} or --clear")
    base = {} if args.clear else dict(current.get("limits") or {})
    limits = {**base, **given}
    return {field: value for field, value in limits.items() if value is not None}


def summary(row: Row) -> str:
    """``rpm=60 tpm=1000 parallel=2 budget=5000/month``, or ``-`` without limits."""
    limits = row.get("limits") or {}
    parts = [
        f"{label}={limits[field]}"
        for field, label in (("rpm", "rpm"), ("tpm", "tpm"), ("max_parallel", "parallel"))
        if limits.get(field) is not None
    ]
    if limits.get("token_budget") is not None:
        parts.append(f"budget={limits['token_budget']}/{limits.get('budget_period') or 'month'}")
    return " ".join(parts) or "-"


def budget_left(row: Row) -> str:
    """``4990 of 5000 until 2026-01-01T00:00:00Z``, or ``-`` without a budget."""
    budget = row.get("budget")
    if not budget:
        return "-"
    total = (row.get("limits") or {}).get("token_budget")
    return f"{budget['remaining']} of {total} until {budget['resets_at']}"


LIMIT_COLUMNS = [Column("Limits", summary), Column("Budget left", budget_left)]


def say_limits(ctx: Context, noun: str, row: Row) -> int:
    return ctx.show(
        row, lambda: say(f"limits of {noun}: {summary(row)}; budget left: {budget_left(row)}")
    )


def add_limit_flags(parser: argparse.ArgumentParser, *, clear: bool) -> None:
    """``--rpm N --tpm N --max-parallel N --token-budget N --budget-period day|month``."""
    for flag, about in (
        ("--rpm", "requests per minute"),
        ("--tpm", "tokens per minute (prompt + completion)"),
        ("--max-parallel", "requests in flight at once"),
        ("--token-budget", "tokens per budget period"),
    ):
        parser.add_argument(
            flag,
            type=limit_value,
            metavar="N",
            default=argparse.SUPPRESS,
            help=f"{about} (N, or none: unlimited)",
        )
    parser.add_argument(
        "--budget-period",
        choices=PERIODS,
        default=argparse.SUPPRESS,
        help="UTC day or month (default month)",
    )
    if clear:
        parser.add_argument("--clear", action="store_true", help="lift every limit first")
