"""``Identity``: who a resolved bearer token belongs to, and what it may do.

``limited`` is computed once, when the identity is made (and cached with it):
the gateway's whole cost for a caller without limits is reading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.limits import LimitSet
from shared.errors import Forbidden


@dataclass(frozen=True)
class Identity:
    user_id: str
    username: str
    is_admin: bool
    api_key_id: str | None = None
    # Deployment names an API key may call through the gateway; None: all.
    allowed_deployments: frozenset[str] | None = None
    # The key's and the user's limits (both apply); None: unlimited.
    key_limits: LimitSet | None = None
    user_limits: LimitSet | None = None
    limited: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        key = self.key_limits if self.api_key_id is not None else None
        object.__setattr__(self, "limited", key is not None or self.user_limits is not None)


def require_admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise Forbidden("This action needs an admin account")
