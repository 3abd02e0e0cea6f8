"""First-start set-up: the data directory, the ``admin`` user, the agent join
token, the cluster id.

Secrets that are generated are written once to 0600 files in the data
directory and read back on later starts, never regenerated behind the
operator's back.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from sqlalchemy import func, select

from controller.auth import hash_password, new_password
from controller.store import Cluster, Database, User, commit_or_conflict
from shared.errors import ConfigError, Conflict
from shared.files import read_or_create
from shared.settings import ControllerSettings

log = logging.getLogger("lmstack.bootstrap")

ADMIN_PASSWORD_FILE = "initial_admin_password"
AGENT_TOKEN_FILE = "agent_token"


def prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {data_dir}: {exc}") from exc


def read_or_create_secret(path: Path, make: str) -> str:
    """The secret in ``path``; written there (mode 0600, exclusively) if absent."""
    try:
        value = read_or_create(path, make)
    except OSError as exc:
        raise ConfigError(f"cannot read or write {path}: {exc}") from exc
    if not value:
        raise ConfigError(f"{path} is empty; delete it or set the secret explicitly")
    return value


async def ensure_admin(db: Database, settings: ControllerSettings) -> None:
    """Create user ``admin`` when the database has no users at all."""
    async with db.session() as session:
        if await session.scalar(select(func.count(User.id))):
            return
        password = settings.admin_password.get_secret_value()
        if password:
            where = "LMSTACK_ADMIN_PASSWORD"
        else:
            path = settings.data_dir / ADMIN_PASSWORD_FILE
            password = read_or_create_secret(path, new_password())
            where = str(path)
        session.add(
            User(
                username="admin",
                is_admin=True,
                password_hash=await hash_password(password, settings.bcrypt_rounds),
            )
        )
        await session.commit()
    log.warning("created user 'admin'; its password is in %s", where)


def agent_token(settings: ControllerSettings) -> str:
    token = settings.agent_token.get_secret_value()
    if token:
        return token
    return read_or_create_secret(settings.data_dir / AGENT_TOKEN_FILE, secrets.token_urlsafe(32))


async def ensure_cluster(db: Database) -> str:
    """The cluster id kept in the database, made on the first start. Controllers
    that start together on one database agree: the row's fixed primary key lets
    only one insert win, and the others read the winner's id."""
    for _ in range(2):
        async with db.session() as session:
            found: str | None = await session.scalar(select(Cluster.id))
            if found is not None:
                return found
            row = Cluster(singleton=1)
            session.add(row)
            try:
                await commit_or_conflict(session, "cluster made concurrently")
            except Conflict:
                continue  # another controller made it first: read theirs
            log.warning("this database is the new LMStack cluster %s", row.id)
            return row.id
    raise ConfigError("the cluster table has no row and none can be added")
