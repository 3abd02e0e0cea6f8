"""``lmstack-controller``: command line → settings → the running controller."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from controller.app import create_app
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


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="lmstack-controller",
        description="LMStack controller. Each flag also reads LMSTACK_<FLAG> from the env.",
    )
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8088)")
    parser.add_argument("--data-dir", help="data directory (default ./data)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in data dir)")
    parser.add_argument("--grpc-port", type=int, help="agent gRPC port (default 50051)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = vars(parser.parse_args(argv))
    return {key: value for key, value in args.items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = ControllerSettings(**parse_args(argv))
    except ValidationError as exc:
        sys.exit(f"lmstack-controller: invalid settings:\n{exc}")
    setup_logging(settings.log_level)
    log.info("starting with settings %s", settings.masked())
    app = create_app(settings)
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


if __name__ == "__main__":
    main()
