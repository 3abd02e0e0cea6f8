"""Who is calling: bearer tokens (API keys and login tokens) to an ``Identity``.

Guarantees:
* Only SHA-256 digests of secrets are stored or cached; the digest found in the
  store is compared with ``hmac.compare_digest``.
* Resolved identities are cached for ``CACHE_SECONDS``; any change to users,
  keys or tokens calls ``invalidate()``, so a deleted key stops working at once
  (a lookup that was running across an invalidation is not cached).
* Concurrent misses for one token share one query, so an entry expiring while
  many requests are in flight costs one query.
* API key ``last_used`` times are buffered in memory and written in one batch
  every ``last_used_flush_seconds`` and at shutdown, so traffic does not turn
  into one database write per request.

Concurrency: everything runs on the controller's event loop; the cache and the
usage buffer are plain dicts touched only from that loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import delete, select, update

from controller.security import (
    API_KEY_PREFIX,
    check_password,
    digests_equal,
    hash_password,
    new_login_token,
    token_digest,
)
from controller.singleflight import SingleFlight
from controller.store import ApiKey, Database, LoginToken, User
from controller.store.timeutil import utcnow
from shared.errors import Forbidden, Unauthorized

log = logging.getLogger("lmstack.auth")

CACHE_SECONDS = 10.0
CACHE_MAX = 10_000


@dataclass(frozen=True)
class Identity:
    user_id: str
    username: str
    is_admin: bool
    api_key_id: str | None = None
    # Deployment names an API key may call through the gateway; None: all.
    allowed_deployments: frozenset[str] | None = None


class Authenticator:
    def __init__(
        self,
        db: Database,
        *,
        token_ttl: timedelta,
        bcrypt_rounds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = token_ttl
        self._rounds = bcrypt_rounds
        self._clock = clock
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._lookups: SingleFlight[str, Identity] = SingleFlight()
        self._generation = 0
        # Epoch seconds (cheaper than a datetime per request), converted when written.
        self._last_used: dict[str, float] = {}
        # Compared against when the username is unknown, so timing does not
        # reveal which usernames exist.
        self._dummy_hash: str | None = None

    # ------------------------------------------------------------ tokens

    async def resolve(self, token: str) -> Identity:
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > self._clock():
            identity = cached[0]
        else:
            identity = await self._lookups.run(
                digest, lambda: self._lookup_and_cache(token, digest)
            )
        if identity.api_key_id is not None:
            self._last_used[identity.api_key_id] = time.time()
        return identity

    async def _lookup_and_cache(self, token: str, digest: str) -> Identity:
        generation = self._generation
        identity = await self._lookup(token, digest)
        if generation == self._generation:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (identity, self._clock() + CACHE_SECONDS)
        return identity

    async def _lookup(self, token: str, digest: str) -> Identity:
        async with self._db.session() as session:
            if token.startswith(API_KEY_PREFIX):
                key_row = await session.execute(
                    select(ApiKey.id, ApiKey.key_hash, User, ApiKey.allowed_deployments)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.key_hash == digest)
                )
                found = key_row.first()
                if found is None or not digests_equal(found[1], digest):
                    raise Unauthorized("Invalid API key")
                user, allowed = found[2], found[3]
                return Identity(
                    user.id,
                    user.username,
                    user.is_admin,
                    api_key_id=found[0],
                    allowed_deployments=None if allowed is None else frozenset(allowed),
                )
            token_row = await session.execute(
                select(LoginToken.token_hash, LoginToken.expires_at, User)
                .join(User, User.id == LoginToken.user_id)
                .where(LoginToken.token_hash == digest)
            )
            found_token = token_row.first()
        if found_token is None or not digests_equal(found_token[0], digest):
            raise Unauthorized("Invalid or expired token")
        if found_token[1] <= utcnow():
            raise Unauthorized("Invalid or expired token")
        user = found_token[2]
        return Identity(user.id, user.username, user.is_admin)

    def invalidate(self) -> None:
        self._cache.clear()
        self._generation += 1

    # ------------------------------------------------------------ login

    async def login(self, username: str, password: str) -> tuple[str, int]:
        """A new login token and its lifetime in seconds, or ``Unauthorized``."""
        async with self._db.session() as session:
            user = await session.scalar(select(User).where(User.username == username))
            if user is None:
                if self._dummy_hash is None:
                    self._dummy_hash = await hash_password("lmstack-dummy", self._rounds)
                await check_password(password, self._dummy_hash)
                raise Unauthorized("Invalid username or password")
            if not await check_password(password, user.password_hash):
                raise Unauthorized("Invalid username or password")
            token = new_login_token()
            now = utcnow()
            session.add(
                LoginToken(
                    user_id=user.id,
                    token_hash=token_digest(token),
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
            # Expired tokens are dropped on each login, keeping the table small.
            await session.execute(delete(LoginToken).where(LoginToken.expires_at <= now))
            await session.commit()
        return token, int(self._ttl.total_seconds())

    # ------------------------------------------------------------ key usage

    def pending_last_used(self, key_id: str) -> datetime | None:
        when = self._last_used.get(key_id)
        return None if when is None else datetime.fromtimestamp(when, UTC)

    async def flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        async with self._db.session() as session:
            for key_id, when in batch.items():
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used=datetime.fromtimestamp(when, UTC))
                )
            await session.commit()
        log.debug("wrote last_used for %d API keys", len(batch))


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity:
    return request[IDENTITY]


def require_admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise Forbidden("This action needs an admin account")
