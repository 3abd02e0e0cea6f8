"""The gRPC server agents dial: a grpc.aio server on the controller's own loop."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import grpc.aio

from controller.fleet.hub import Fleet
from controller.fleet.servicer import AgentServicer
from controller.store import Database
from shared.errors import ConfigError
from shared.proto.lmstack.v1 import agent_pb2_grpc
from shared.settings import ControllerSettings

log = logging.getLogger("lmstack.fleet")

# Agents ping every 20 s to notice dead connections; allow that (the default
# policy would answer frequent pings with GOAWAY). Messages stay small, but a
# log tail can be large.
SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)


def _credentials(settings: ControllerSettings) -> grpc.ServerCredentials | None:
    if settings.grpc_tls_cert is None and settings.grpc_tls_key is None:
        return None
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        raise ConfigError("LMSTACK_GRPC_TLS_CERT and LMSTACK_GRPC_TLS_KEY go together")

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc

    client_ca = settings.grpc_tls_client_ca
    return grpc.ssl_server_credentials(
        [(read(settings.grpc_tls_key), read(settings.grpc_tls_cert))],
        root_certificates=read(client_ca) if client_ca else None,
        require_client_auth=client_ca is not None,
    )


class FleetServer:
    def __init__(self, settings: ControllerSettings, fleet: Fleet, db: Database, token: str):
        self._settings = settings
        server = grpc.aio.server(options=SERVER_OPTIONS)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(fleet, db, token), server)
        self._server: grpc.aio.Server | None = server
        self.port = 0

    async def start(self) -> int:
        address = f"{self._settings.grpc_host}:{self._settings.grpc_port}"
        credentials = _credentials(self._settings)
        server = self._server
        if server is None:
            raise ConfigError("the agents' gRPC server was stopped already")
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen for agents on {address}: {exc}") from exc
        await server.start()
        log.info("agents connect to port %d (%s)", self.port, "TLS" if credentials else "plaintext")
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving and let go of the grpc.aio server on the running loop.

        grpc.aio's ``Server.__del__`` schedules a shutdown on the loop it was
        made on if it still counts as running; dropped after the loop closed
        (at interpreter exit, after uvloop closed) that printed ``RuntimeError:
        Event loop is closed``. Stopped and terminated here, and no longer
        referenced, it has nothing left to schedule."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(grace)
        await server.wait_for_termination(grace)
