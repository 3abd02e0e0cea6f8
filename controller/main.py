"""``lmstack-controller``: command line → settings → the running controller.

``lmstack-controller [FLAGS]`` runs the controller (which upgrades the database
schema as it starts); ``lmstack-controller migrate [--database-url URL]``
only upgrades the schema to the newest migration and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from controller.app import create_app
from controller.bootstrap import prepare_data_dir
from controller.store import Database
from shared.errors import LMStackError
from shared.logging import setup_logging
from shared.settings import ControllerSettings

log = logging.getLogger("lmstack.controller")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it roughly halves the gateway's own
    latency), else the standard loop."""
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _store_flags(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--data-dir", default=default, help="data directory (default ./data)")
    parser.add_argument(
        "--database-url", default=default, help="SQLAlchemy URL (default: SQLite in data dir)"
    )
    parser.add_argument(
        "--log-level", default=default, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def parse_command(argv: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    """The subcommand (``serve`` when none is given) and the settings from flags."""
    parser = argparse.ArgumentParser(
        prog="lmstack-controller",
        description="LMStack controller. Each flag also reads LMSTACK_<FLAG> from the env.",
    )
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8088)")
    _store_flags(parser)
    parser.add_argument("--grpc-port", type=int, help="agent gRPC port (default 50051)")
    commands = parser.add_subparsers(dest="command", metavar="{migrate}")
    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema to the newest migration and exit"
    )
    # SUPPRESS: flags given before the subcommand are not reset by its defaults.
    _store_flags(migrate, default=argparse.SUPPRESS)
    args = vars(parser.parse_args(argv))
    command = args.pop("command", None) or "serve"
    return command, {key: value for key, value in args.items() if value is not None}


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    """The settings given as flags (whatever the subcommand)."""
    return parse_command(argv)[1]


async def migrate(settings: ControllerSettings) -> None:
    prepare_data_dir(settings.data_dir)
    db = Database(settings.effective_database_url())
    try:
        before = await db.revision()
        await db.create_schema()
        after = await db.revision()
    finally:
        await db.close()
    if before == after:
        log.info("database schema is at %s already", after)
    else:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        command, flags = parse_command(argv)
        settings = ControllerSettings(**flags)
    except ValidationError as exc:
        sys.exit(f"lmstack-controller: invalid settings:\n{exc}")
    setup_logging(settings.log_level)
    if command == "migrate":
        try:
            asyncio.run(migrate(settings))
        except LMStackError as exc:
            log.error("%s", exc)
            sys.exit(1)
        return
    log.info("starting with settings %s", settings.masked())
    deaths: list[str] = []

    def stop_on_loop_death(reason: str) -> None:
        # Stops like a SIGTERM (aiohttp's graceful shutdown), then exits 1 so
        # a supervisor restarts the controller instead of it serving half-dead.
        deaths.append(reason)
        os.kill(os.getpid(), signal.SIGTERM)

    app = create_app(settings, on_loop_death=stop_on_loop_death)
    try:
        web.run_app(
            app,
            loop=new_event_loop(),
            host=settings.host,
            port=settings.port,
            print=lambda _msg: log.info(
                "REST API on http://%s:%d (health: /health, API docs: /api/openapi.json)",
                settings.host,
                settings.port,
            ),
            access_log=None,
            shutdown_timeout=10,
        )
    except LMStackError as exc:
        log.error("%s", exc)
        sys.exit(1)
    if deaths:
        sys.exit(f"lmstack-controller: stopped because a {deaths[0]}")


if __name__ == "__main__":
    main()
