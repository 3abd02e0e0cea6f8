"""ORM models. Ids are UUID strings; timestamps are aware UTC datetimes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controller.store.timeutil import UTCDateTime, utcnow
from shared.status import DeploymentStatus, WorkerStatus


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Limits:
    """Limits a user or an API key is held to; None (NULL) is unlimited.

    ``tpm`` and ``token_budget`` count prompt + completion tokens;
    ``budget_period`` (``day`` or ``month``, UTC) is set exactly when
    ``token_budget`` is. Enforced by the gateway (``controller.limits``).
    """

    rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_parallel: Mapped[int | None] = mapped_column(Integer, default=None)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_period: Mapped[str | None] = mapped_column(String(8), default=None)


class User(Limits, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Limits, Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_name", "user_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # SHA-256 hex of the full key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(default=None)
    # Deployment names this key may call through the gateway; None: all.
    allowed_deployments: Mapped[list[Any] | None] = mapped_column(default=None)


class LoginToken(Base):
    """A bearer token from ``POST /api/auth/login``; only its SHA-256 is stored."""

    __tablename__ = "login_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkerStatus.OFFLINE)
    advertise_address: Mapped[str] = mapped_column(String(255), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    gpu_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    system_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    runtime_error: Mapped[str] = mapped_column(Text, default="")
    # The host port range its agent declared (``--engine-port-range``); NULL:
    # none, the controller's ``LMSTACK_ENGINE_PORT_MIN``-``_MAX`` applies.
    engine_port_min: Mapped[int | None] = mapped_column(Integer, default=None)
    engine_port_max: Mapped[int | None] = mapped_column(Integer, default=None)
    last_heartbeat: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Cluster(Base):
    """The cluster this database is: one row, made on the first start
    (``controller.bootstrap.ensure_cluster``) and never changed. Its id labels
    every engine container, so a controller only ever stops or removes the
    containers of its own cluster (DESIGN.md section 3)."""

    __tablename__ = "cluster"

    # Always 1: the primary key is what keeps the table at one row.
    singleton: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    backend: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.PENDING, index=True)
    status_message: Mapped[str] = mapped_column(Text, default="")
    worker_id: Mapped[str | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"), index=True, default=None
    )
    container_id: Mapped[str | None] = mapped_column(String(80), default=None)
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Usage(Base):
    """Gateway usage per API key, deployment and UTC day.

    No foreign keys on purpose: history outlives deleted keys and deployments.
    ``api_key_id`` is empty for calls made with a login token.
    """

    __tablename__ = "usage"
    __table_args__ = (
        Index("ux_usage_key_deployment_day", "api_key_id", "user_id", "deployment_id", "day",
              unique=True),
        Index("ix_usage_day", "day"),
    )  # fmt: skip

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    deployment_id: Mapped[str] = mapped_column(String(36))
    deployment_name: Mapped[str] = mapped_column(String(63))
    # ISO date, ``YYYY-MM-DD`` (UTC).
    day: Mapped[str] = mapped_column(String(10))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageCheckpoint(Base):
    """The newest usage-journal segment a controller has added to ``usage``.

    One row per controller (its journal's random id): the segment counts and
    this row change in one transaction, so a segment at or below ``segment``
    is never added again (``controller.gateway.journal``).
    """

    __tablename__ = "usage_checkpoints"

    controller_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    segment: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
