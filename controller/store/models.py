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
    # Its agent's labels (``--label key=value``), matched by ``config.worker_selector``.
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat: Mapped[datetime | None] = mapped_column(default=None)
    # When the worker last went offline; NULL while online (or never seen
    # offline since this controller started). Rescheduling reads it.
    offline_since: Mapped[datetime | None] = mapped_column(default=None)
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
    """A model served by ``replicas`` instances (DESIGN.md section 7).

    ``model`` and ``config`` are the desired spec; ``spec_version`` counts its
    container changes (model, image, engine config), and an instance of an older
    version is rolled. ``status``, ``status_message``, ``worker_id``,
    ``container_id``, ``port`` and ``gpu_indices`` are the aggregate the REST API
    documents (``controller.deployments.aggregate``), kept in step with the
    instances so lists filter and page without reading them.
    """

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    backend: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(512))
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    # ``POST .../stop``: no instance runs, ``replicas`` is kept for ``/start``.
    stopped: Mapped[bool] = mapped_column(Boolean, default=False)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    # Why the last rolling update halted; empty when none did.
    rollout_error: Mapped[str] = mapped_column(Text, default="")
    # Every instance on this worker (``worker_id`` of the create); NULL: placed.
    pinned_worker_id: Mapped[str | None] = mapped_column(String(36), default=None)
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


class Instance(Base):
    """One replica of a deployment: one engine container on one worker.

    ``model`` and ``config`` are the spec it runs (``spec_version`` of its
    deployment's), so an old instance keeps its spec through a rolling update.
    ``draining``: being stopped; the gateway sends it no new requests.
    Instances made by the upgrade to replicas have their deployment's id.
    """

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    worker_id: Mapped[str | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"), index=True, default=None
    )
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    container_id: Mapped[str | None] = mapped_column(String(80), default=None)
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.PENDING)
    status_message: Mapped[str] = mapped_column(Text, default="")
    # An ``error`` after which the agent restarts nothing more.
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    last_exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    model: Mapped[str] = mapped_column(String(512))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
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
