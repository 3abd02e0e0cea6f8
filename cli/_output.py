"""Plain aligned tables and JSON on standard output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], Any]


def col(header: str, key: str | None = None) -> Column:
    """A column showing ``row[key]`` (default: the header lower-cased)."""
    name = key or header.lower()
    return Column(header, lambda row: row.get(name))


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def print_table(rows: Sequence[Row], columns: Sequence[Column]) -> None:
    table = [[c.header.upper() for c in columns]]
    table += [[cell(c.value(row)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        text = "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True))
        sys.stdout.write(text.rstrip() + "\n")
    if not rows:
        sys.stdout.write("(none)\n")


def print_fields(row: Row, fields: Sequence[Column]) -> None:
    """One record as ``Header: value`` lines."""
    width = max(len(f.header) for f in fields) + 1
    for field in fields:
        sys.stdout.write(f"{(field.header + ':').ljust(width)} {cell(field.value(row))}\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
