"""The gRPC channel to the controller: TLS credentials and keepalive."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio

from shared.errors import ConfigError
from shared.settings import AgentSettings

# HTTP/2 pings notice a controller that vanished without closing the
# connection (host down, NAT state dropped) within about 30 s. The controller
# permits pings this often (see controller.fleet.server).
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class ChannelFactory:
    """Opens a fresh channel per connection attempt; TLS files are read once, at start."""

    def __init__(self, settings: AgentSettings) -> None:
        self._target = settings.controller
        self._credentials = _channel_credentials(settings)

    def open(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._target, options=KEEPALIVE_OPTIONS)
        return grpc.aio.secure_channel(self._target, self._credentials, options=KEEPALIVE_OPTIONS)


def _channel_credentials(settings: AgentSettings) -> grpc.ChannelCredentials | None:
    if not settings.tls:
        return None
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(settings.tls_ca),
        private_key=_read_pem(settings.tls_key),
        certificate_chain=_read_pem(settings.tls_cert),
    )


def _read_pem(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS file {path}: {exc}") from exc
