"""Settings for both daemons, in one place.

Every field is read from an ``LMSTACK_``-prefixed environment variable; command
line flags override the environment (they are passed as init arguments).
``masked()`` gives the effective settings with secrets hidden, for the start-up
log line.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.engines.config import LabelKey, LabelValue

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
PlacementPolicy = Literal["binpack", "spread"]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMSTACK_", extra="ignore")

    log_level: LogLevel = "INFO"

    def masked(self) -> dict[str, Any]:
        """The effective settings, secrets replaced by ``***``."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "***" if value.get_secret_value() else ""
            elif name == "database_url" and isinstance(value, str) and "@" in value:
                scheme, _, rest = value.partition("://")
                out[name] = f"{scheme}://***@{rest.rpartition('@')[2]}"
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out


class ControllerSettings(_Base):
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    data_dir: Path = Path("./data")
    # Default: a SQLite file in data_dir (see ``effective_database_url``).
    database_url: str = ""
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Join token agents present; generated into <data_dir>/agent_token if unset.
    agent_token: SecretStr = SecretStr("")
    # Password for the first ``admin`` user; generated into a 0600 file if unset.
    admin_password: SecretStr = SecretStr("")
    token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    # How long a REST call waits for an agent's reply (logs, containers).
    agent_request_timeout: float = Field(default=10.0, gt=0)
    # How often buffered API key ``last_used`` times are written.
    last_used_flush_seconds: float = Field(default=30.0, gt=0)
    # Gateway → engine: seconds to connect, seconds for a whole non-streamed
    # answer (or between two chunks of a stream), SSE keep-alive comment period.
    gateway_connect_timeout: float = Field(default=5.0, gt=0)
    gateway_timeout: float = Field(default=600.0, gt=0)
    gateway_keepalive_seconds: float = Field(default=15.0, gt=0)
    # How often the gateway's usage journal is added to the database.
    usage_flush_seconds: float = Field(default=10.0, gt=0)
    # Host ports handed to engine containers, per worker.
    engine_port_min: int = Field(default=40000, ge=1024, le=65535)
    engine_port_max: int = Field(default=40999, ge=1024, le=65535)
    # How the scheduler picks GPUs: fill the fullest that fit, or the emptiest.
    placement_policy: PlacementPolicy = "binpack"
    # The longest time between two reconciliation passes (each change triggers
    # one at once); deadlines such as ``reschedule_after`` are checked by them.
    reconcile_interval: float = Field(default=5.0, gt=0, le=3600)
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    # CA that signs agent client certificates; when set, agents must present one.
    grpc_tls_client_ca: Path | None = None
    # Serve ``GET /metrics`` without a bearer token (for a scraper on a trusted network).
    metrics_public: bool = False

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'lmstack.db').resolve()}"


class AgentSettings(_Base):
    controller: str = "127.0.0.1:50051"
    token: SecretStr = SecretStr("")
    name: str = Field(default_factory=socket.gethostname)
    # Address the gateway uses to reach engines on this host.
    advertise_address: str = ""
    state_dir: Path = Path("/var/lib/lmstack/agent")
    heartbeat_interval: float = Field(default=5.0, gt=0)
    # Seconds an engine gets to answer its health endpoint after start.
    engine_ready_timeout: float = Field(default=1800.0, gt=0)
    hf_cache_dir: Path = Path.home() / ".cache" / "huggingface"
    # Docker endpoint; empty means the environment's default (DOCKER_HOST or the socket).
    docker_host: str = ""
    # ``COUNTxGIB``, e.g. ``4x80``: report simulated GPUs (no device requests).
    simulate_gpus: str = ""
    reconnect_max_seconds: float = Field(default=10.0, gt=0)
    # ``MIN-MAX``, e.g. ``41000-41999``: the host ports the controller may give
    # this agent's engines; empty: the controller's own range.
    engine_port_range: str = ""
    # The worker's labels, matched by a deployment's ``config.worker_selector``:
    # ``--label key=value`` (repeatable) or ``LMSTACK_LABELS=gpu=a100,zone=b``.
    labels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # The engines' restart policy (``agent.restarts``): the first back-off,
    # its cap, the healthy run that resets it, and the health check period
    # (3 failed checks in a row restart a running engine).
    restart_backoff_initial: float = Field(default=10.0, gt=0)
    restart_backoff_max: float = Field(default=300.0, gt=0)
    restart_reset_after: float = Field(default=600.0, gt=0)
    health_check_interval: float = Field(default=10.0, gt=0)
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("controller")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be HOST:PORT")
        return value

    @field_validator("engine_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_port_range(value)
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> dict[str, str]:
        return parse_labels(value)

    def engine_ports(self) -> tuple[int, int] | None:
        """The declared engine port range, both ends inclusive; ``None``: none declared."""
        return parse_port_range(self.engine_port_range) if self.engine_port_range else None


_LABEL_KEY: TypeAdapter[str] = TypeAdapter(LabelKey)
_LABEL_VALUE: TypeAdapter[str] = TypeAdapter(LabelValue)


def parse_labels(value: object) -> dict[str, str]:
    """Worker labels from ``"k=v,k2=v2"``, a list of such items (repeated
    ``--label`` flags) or a mapping; ``ValueError`` naming the bad one."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str | list | tuple):
        texts = [value] if isinstance(value, str) else [str(item) for item in value]
        items = [_label_item(part) for text in texts for part in text.split(",") if part.strip()]
    else:
        raise ValueError("labels must be key=value items")
    labels: dict[str, str] = {}
    for key, val in items:
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        checked = _checked(_LABEL_KEY, key, "label key")
        labels[checked] = _checked(_LABEL_VALUE, val, f"label {key!r}: value")
    return labels


def _label_item(text: str) -> tuple[str, str]:
    key, sep, val = text.strip().partition("=")
    if not sep:
        raise ValueError(f"label {text.strip()!r} is not key=value")
    return key.strip(), val.strip()


def _checked(adapter: TypeAdapter[str], text: str, what: str) -> str:
    try:
        return adapter.validate_python(text)
    except ValidationError as exc:
        pattern = exc.errors()[0].get("ctx", {}).get("pattern", "")
        raise ValueError(f"{what} {text!r} does not match {pattern}") from None


def parse_port_range(text: str) -> tuple[int, int]:
    """``"41000-41999"`` → ``(41000, 41999)``; ``ValueError`` saying what is wrong."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"{text!r} is not MIN-MAX (e.g. 41000-41999)")
    first, last = int(low), int(high)
    if not 1 <= first <= 65535 or not 1 <= last <= 65535:
        raise ValueError(f"{text!r}: ports must be between 1 and 65535")
    if first > last:
        raise ValueError(f"{text!r}: MIN {first} is greater than MAX {last}")
    return first, last
