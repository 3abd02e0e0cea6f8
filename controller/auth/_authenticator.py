"""Who is calling: bearer tokens (API keys and login tokens) to an ``Identity``.

Guarantees:
* Only SHA-256 digests of secrets are stored or cached; the digest found in the
  store is compared with ``hmac.compare_digest``.
* Resolved identities are cached for ``CACHE_SECONDS``, with the key's and the
  user's limits (``LimitSet``, read by the same query); any change to users,
  keys, tokens or limits calls ``invalidate()``, so a deleted key stops working at once
  (a lookup that was running across an invalidation is not cached).
* Concurrent misses for one token share one query, so an entry expiring while
  many requests are in flight costs one query.
* API key ``last_used`` times are buffered and written in batches (see
  ``_last_used``), so traffic does not turn into one database write per request.

Concurrency: everything runs on the controller's event loop; the cache is a
plain dict touched only from that loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from controller.auth._identity import Identity
from controller.auth._last_used import LastUsed
from controller.auth._secrets import (
    API_KEY_PREFIX,
    check_password,
    digests_equal,
    hash_password,
    new_login_token,
    token_digest,
)
from controller.limits import LimitSet
from controller.singleflight import SingleFlight
from controller.store import ApiKey, Database, LoginToken, User
from controller.store.timeutil import utcnow
from shared.errors import Unauthorized

CACHE_SECONDS = 10.0
CACHE_MAX = 10_000


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
        self._last_used = LastUsed(db)
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
            self._last_used.record(identity.api_key_id)
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
                    select(ApiKey, User)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.key_hash == digest)
                )
                found = key_row.first()
                if found is None or not digests_equal(found[0].key_hash, digest):
                    raise Unauthorized("Invalid API key")
                key, user = found[0], found[1]
                allowed = key.allowed_deployments
                return Identity(
                    user.id,
                    user.username,
                    user.is_admin,
                    api_key_id=key.id,
                    allowed_deployments=None if allowed is None else frozenset(allowed),
                    key_limits=LimitSet.of(key),
                    user_limits=LimitSet.of(user),
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
        return Identity(user.id, user.username, user.is_admin, user_limits=LimitSet.of(user))

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
        """When ``key_id`` was last used, if that is not written yet."""
        return self._last_used.pending(key_id)

    async def flush_last_used(self) -> None:
        """Write the buffered ``last_used`` times; a batch that fails is kept."""
        await self._last_used.flush()
