"""``lmstack keys create/limits`` and ``lmstack users limits``: flags become the
API's limits, an edit keeps the limits it does not name, listings show them."""

from __future__ import annotations

from tests.cli.conftest import Cli
from tests.conftest import Controller

NO_LIMITS = dict.fromkeys(("rpm", "tpm", "max_parallel", "token_budget", "budget_period"))


async def test_keys_created_and_edited_with_limits(admin_cli: Cli) -> None:
    created = await admin_cli.ok(
        "keys", "create", "app", "--rpm", "60", "--token-budget", "5000", "--json"
    )
    limits = created.json()["limits"]
    assert limits == {**NO_LIMITS, "rpm": 60, "token_budget": 5000, "budget_period": "month"}

    edited = await admin_cli.ok("keys", "limits", "app", "--tpm", "900", "--json")
    assert edited.json()["limits"] == {**limits, "tpm": 900}  # the others are kept
    lifted = await admin_cli.ok(
        "keys", "limits", "app", "--token-budget", "none", "--max-parallel", "2", "--json"
    )
    assert lifted.json()["limits"] == {**NO_LIMITS, "rpm": 60, "tpm": 900, "max_parallel": 2}
    said = await admin_cli.ok(
        "keys", "limits", "app", "--token-budget", "10", "--budget-period", "day"
    )
    assert "rpm=60 tpm=900 parallel=2 budget=10/day" in said.out
    assert "budget left: 10 of 10 until" in said.out

    table = (await admin_cli.ok("keys", "list")).out
    assert table.splitlines()[0].split()[-3:] == ["LIMITS", "BUDGET", "LEFT"]
    assert "rpm=60 tpm=900 parallel=2 budget=10/day" in table and "10 of 10 until" in table

    cleared = await admin_cli.ok("keys", "limits", "app", "--clear", "--json")
    assert cleared.json()["limits"] == NO_LIMITS and cleared.json()["budget"] is None


async def test_bad_limit_flags_are_usage_errors(admin_cli: Cli) -> None:
    await admin_cli.ok("keys", "create", "app")
    for flags in (["--rpm", "0"], ["--tpm", "lots"], ["--budget-period", "week"], []):
        result = await admin_cli("keys", "limits", "app", *flags)
        assert result.code == 2, (flags, result)
    # The API's own check: a period needs a budget.
    result = await admin_cli("keys", "limits", "app", "--budget-period", "day")
    assert result.code == 1 and "budget_period" in result.err


async def test_users_limits_need_an_admin(
    admin_cli: Cli, other_cli: Cli, controller: Controller
) -> None:
    await admin_cli.ok("users", "create", "alice", "--password-stdin", stdin="alice-password\n")
    limited = await admin_cli.ok("users", "limits", "alice", "--rpm", "5", "--json")
    assert limited.json()["limits"] == {**NO_LIMITS, "rpm": 5}
    table = (await admin_cli.ok("users", "list")).out
    [row] = [line for line in table.splitlines() if line.split()[1] == "alice"]
    assert "rpm=5" in row

    await other_cli.login("alice", "alice-password")
    refused = await other_cli("users", "limits", "alice", "--rpm", "500")
    assert refused.code == 3
    mine = (await other_cli.ok("keys", "create", "mine", "--max-parallel", "1", "--json")).json()
    assert mine["limits"]["max_parallel"] == 1
