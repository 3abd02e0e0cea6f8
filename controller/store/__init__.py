"""Persistence: SQLAlchemy 2 typed async ORM over SQLite (default) or PostgreSQL."""

from controller.store import aggregate
from controller.store.db import Database, commit_or_conflict, flushing, uncancelled
from controller.store.models import (
    ApiKey,
    Base,
    Cluster,
    Deployment,
    Instance,
    LoginToken,
    Usage,
    UsageCheckpoint,
    User,
    Worker,
)

__all__ = [
    "ApiKey",
    "Base",
    "Cluster",
    "Database",
    "Deployment",
    "Instance",
    "LoginToken",
    "Usage",
    "UsageCheckpoint",
    "User",
    "Worker",
    "aggregate",
    "commit_or_conflict",
    "flushing",
    "uncancelled",
]
