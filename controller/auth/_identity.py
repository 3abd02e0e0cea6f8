"""``Identity``: who a resolved bearer token belongs to, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import Forbidden


@dataclass(frozen=True)
class Identity:
    user_id: str
    username: str
    is_admin: bool
    api_key_id: str | None = None
    # Deployment names an API key may call through the gateway; None: all.
    allowed_deployments: frozenset[str] | None = None


def require_admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise Forbidden("This action needs an admin account")
