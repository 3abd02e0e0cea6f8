"""The one LMStack error hierarchy.

    LMStackError
     ├── ConfigError            bad settings; the process refuses to start
     ├── StoreError             the database failed (translated from SQLAlchemy)
     ├── APIError               carries an HTTP status and a client-safe detail
     │    ├── BadRequest          400
     │    ├── Unauthorized        401
     │    ├── Forbidden           403
     │    ├── NotFound            404
     │    ├── Conflict            409
     │    ├── ValidationFailed    422, with per-field errors
     │    ├── RateLimited         429, a key's or user's rate limit or token budget
     │    ├── ServiceUnavailable  503 (worker offline, agent not connected)
     │    └── GatewayTimeout      504 (the agent did not answer in time)
     ├── AgentError             the agent side failed
     │    ├── RuntimeUnavailable  no Docker engine reachable
     │    ├── ContainerError      Docker refused or a container failed
     │    └── GpuError            NVML failed
     ├── ProtocolError          the controller/agent stream broke its contract
     └── UpstreamError          an engine refused, dropped or garbled a gateway request

Lower-layer errors (Docker, NVML, gRPC, SQLAlchemy) are translated where they
enter our code: ``raise ContainerError(...) from exc``.
"""

from __future__ import annotations

from typing import Any


class LMStackError(Exception):
    """Root of every error LMStack raises on purpose."""


class ConfigError(LMStackError):
    """Settings are invalid."""


class StoreError(LMStackError):
    """The database failed."""


class APIError(LMStackError):
    """An error that maps to an HTTP response with a client-safe detail."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(APIError):
    status_code = 400


class Unauthorized(APIError):
    status_code = 401


class Forbidden(APIError):
    status_code = 403


class NotFound(APIError):
    status_code = 404


class Conflict(APIError):
    status_code = 409


class ValidationFailed(APIError):
    """422 with the offending fields, each ``{"loc": [...], "msg": ..., "type": ...}``."""

    status_code = 422

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class RateLimited(APIError):
    """429: a limit refused the request. ``type`` and ``code`` are OpenAI's
    (``rate_limit_exceeded`` or ``insufficient_quota``; the limit's name), ``retry_after``
    the seconds until it would be admitted, ``headers`` what the answer carries."""

    status_code = 429

    def __init__(
        self, detail: str, *, type: str, code: str, retry_after: float, headers: dict[str, str]
    ) -> None:
        super().__init__(detail)
        self.type = type
        self.code = code
        self.retry_after = retry_after
        self.headers = headers


class ServiceUnavailable(APIError):
    status_code = 503


class GatewayTimeout(APIError):
    status_code = 504


class AgentError(LMStackError):
    """The agent failed."""


class RuntimeUnavailable(AgentError):
    """No container engine can be reached."""


class ContainerError(AgentError):
    """The container engine refused a request, or a container failed."""


class GpuError(AgentError):
    """NVML failed."""


class ProtocolError(LMStackError):
    """A peer broke the controller/agent contract."""


class UpstreamError(LMStackError):
    """An engine could not be reached, closed the connection or answered with
    malformed HTTP (the gateway answers 502)."""
