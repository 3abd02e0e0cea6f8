"""Bodies of ``GET /api/usage``: usage rows and totals, and the token budgets
visible to the caller in their current UTC period."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from controller.schemas import Budget, Query


class UsageQuery(Query):
    api_key_id: str | None = None
    deployment_id: str | None = None
    deployment: str | None = Field(default=None, description="Deployment name")
    start: date | None = Field(default=None, description="First day, inclusive (UTC)")
    end: date | None = Field(default=None, description="Last day, inclusive (UTC)")

    @model_validator(mode="after")
    def _ordered(self) -> UsageQuery:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class UsageRow(BaseModel):
    date: str
    api_key_id: str | None = Field(description="null for calls made with a login token")
    user_id: str
    deployment_id: str
    deployment_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageTotals(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UsageBudget(Budget):
    """A user's or an API key's token budget, now (the date filters do not apply)."""

    scope: Literal["user", "api_key"]
    user_id: str
    api_key_id: str | None = Field(description="null for a user's budget")
    name: str = Field(description="The username, or the API key's name")
    token_budget: int


class UsageList(BaseModel):
    items: list[UsageRow]
    totals: UsageTotals
    budgets: list[UsageBudget] = Field(
        default_factory=list,
        description="The token budgets set on the caller (admins: every user) and their keys",
    )
