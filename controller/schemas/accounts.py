"""Limits, API key and user bodies of the REST API."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from controller.limits.periods import BudgetPeriod
from controller.schemas._common import (
    DeploymentName,
    Email,
    Password,
    Strict,
    Timestamp,
    Username,
)

# ---------------------------------------------------------------- limits

# Bounds of the columns: rpm and max_parallel are INTEGER, tpm and budgets BIGINT.
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1


class Limits(Strict):
    """What a user or an API key is held to; null: unlimited. A key's calls are
    held to both the key's and its user's limits (the stricter wins)."""

    rpm: int | None = Field(default=None, ge=1, le=_INT_MAX, description="Requests per minute")
    tpm: int | None = Field(
        default=None, ge=1, le=_BIGINT_MAX, description="Prompt + completion tokens per minute"
    )
    max_parallel: int | None = Field(
        default=None, ge=1, le=_INT_MAX, description="Requests in flight at once"
    )
    token_budget: int | None = Field(
        default=None, ge=1, le=_BIGINT_MAX, description="Prompt + completion tokens per period"
    )
    budget_period: BudgetPeriod | None = Field(
        default=None,
        validate_default=True,
        description="UTC day or month; month when token_budget is set and this is not",
    )

    @field_validator("budget_period")
    @classmethod
    def _period_of_a_budget(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "token_budget" not in info.data:
            return value  # token_budget itself is invalid, and reported
        has_budget = info.data["token_budget"] is not None
        if value is not None and not has_budget:
            raise ValueError("budget_period needs token_budget")
        return "month" if value is None and has_budget else value


class Budget(BaseModel):
    """A token budget in its current UTC period."""

    period: BudgetPeriod
    used: int = Field(description="Prompt + completion tokens used in this period")
    remaining: int = Field(description="Tokens left in this period (0 when exhausted)")
    resets_at: Timestamp = Field(description="Start of the next period (UTC)")


# ---------------------------------------------------------------- api keys


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    # Deployment names the key may call through the gateway; omitted or null: all.
    allowed_deployments: list[DeploymentName] | None = Field(default=None, max_length=1000)
    limits: Limits | None = None


class ApiKeyUpdate(Strict):
    """Given fields replace the key's; ``limits`` replaces all five (null or {}: none)."""

    name: str | None = Field(default=None, min_length=1, max_length=128)
    allowed_deployments: list[DeploymentName] | None = Field(default=None, max_length=1000)
    limits: Limits | None = None


class ApiKeyCreated(BaseModel):
    id: str
    name: str
    key: str
    prefix: str
    hint: str
    allowed_deployments: list[str] | None
    limits: Limits
    budget: Budget | None
    created_at: Timestamp


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    hint: str
    user_id: str
    allowed_deployments: list[str] | None
    limits: Limits
    budget: Budget | None = Field(description="null without a token budget")
    created_at: Timestamp
    last_used: Timestamp | None


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


# ---------------------------------------------------------------- users


class UserCreate(Strict):
    username: Username
    email: Email | None = None
    password: Password
    is_admin: bool = False
    limits: Limits | None = None


class UserUpdate(Strict):
    email: Email | None = None
    password: Password | None = None
    is_admin: bool | None = None
    limits: Limits | None = Field(
        default=None, description="Replaces the user's limits (null or {}: none)"
    )


class UserOut(BaseModel):
    id: str
    username: str
    email: str | None
    is_admin: bool
    limits: Limits
    budget: Budget | None = Field(description="null without a token budget")
    created_at: Timestamp


class UserList(BaseModel):
    items: list[UserOut]
