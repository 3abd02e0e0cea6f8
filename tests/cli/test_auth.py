"""``lmstack login``, where the token is kept, and the auth exit codes."""

from __future__ import annotations

import json
import stat

from tests.cli.conftest import Cli
from tests.conftest import ADMIN_PASSWORD, Controller


async def test_login_stores_the_token_owner_only(cli: Cli, controller: Controller) -> None:
    result = await cli(
        "login", "--username", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )

    assert result.code == 0, result
    assert "signed in" in result.out
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    stored = json.loads(cli.config_file.read_text())
    assert stored["url"] == controller.url
    assert stored["username"] == "admin"
    assert stored["token"].startswith("lmst_")
    me = (await cli.ok("whoami", "--json")).json()
    assert me["username"] == "admin"
    assert me["is_admin"] is True


async def test_wrong_password_is_an_auth_error(cli: Cli) -> None:
    result = await cli("login", "-u", "admin", "--password-stdin", stdin="wrong-password\n")

    assert result.code == 3
    assert result.err.startswith("error: ")
    assert result.out == ""
    assert not cli.config_file.exists()


async def test_login_without_terminal_or_stdin_flag_is_a_usage_error(cli: Cli) -> None:
    result = await cli("login", "--username", "admin")

    assert result.code == 2
    assert "--password-stdin" in result.err


async def test_commands_need_a_token(cli: Cli) -> None:
    result = await cli("deployments", "list")

    assert result.code == 3
    assert "lmstack login" in result.err


async def test_token_is_not_sent_to_another_controller(admin_cli: Cli) -> None:
    # The stored token belongs to the fixture's URL; 127.0.0.2 is another controller.
    other = admin_cli.url.replace("127.0.0.1", "127.0.0.2")
    result = await admin_cli("--controller", other, "workers", "list")

    assert result.code == 3
    assert "not signed in" in result.err


async def test_api_key_from_environment(admin_cli: Cli, other_cli: Cli) -> None:
    key = (await admin_cli.ok("keys", "create", "ci", "--json")).json()["key"]

    listing = await other_cli.ok("workers", "list", "--json", env={"LMSTACK_TOKEN": key})
    assert listing.json() == {"items": []}

    await admin_cli.ok("keys", "delete", "ci")
    revoked = await other_cli("workers", "list", env={"LMSTACK_TOKEN": key})
    assert revoked.code == 3


async def test_unreachable_controller(cli: Cli) -> None:
    result = await cli(
        "workers", "list", env={"LMSTACK_URL": "http://127.0.0.1:9", "LMSTACK_TOKEN": "x"}
    )

    assert result.code == 4
    assert "cannot reach the controller at http://127.0.0.1:9" in result.err


async def test_logout_forgets_the_token(admin_cli: Cli) -> None:
    await admin_cli.ok("logout")

    assert json.loads(admin_cli.config_file.read_text())["token"] == ""
    assert (await admin_cli("whoami")).code == 3
