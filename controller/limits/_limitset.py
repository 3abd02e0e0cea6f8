"""``LimitSet``: the limits one user or one API key is held to, as the gateway reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class LimitColumns(Protocol):
    """A row with the limit columns (``controller.store.models.Limits``)."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def max_parallel(self) -> int | None: ...
    @property
    def token_budget(self) -> int | None: ...
    @property
    def budget_period(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class LimitSet:
    """None in a field: that dimension is unlimited. ``budget_period`` is set
    exactly when ``token_budget`` is (``day`` or ``month``, UTC)."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    token_budget: int | None = None
    budget_period: str | None = None

    @classmethod
    def of(cls, row: LimitColumns) -> LimitSet | None:
        """The row's limits, or None when it has none (so an unlimited caller
        costs the gateway one attribute check)."""
        budget = row.token_budget
        limits = cls(
            rpm=row.rpm,
            tpm=row.tpm,
            max_parallel=row.max_parallel,
            token_budget=budget,
            # A budget without a period counts per month, as the REST API defaults it.
            budget_period=(row.budget_period or "month") if budget is not None else None,
        )
        return None if limits == _UNLIMITED else limits


_UNLIMITED = LimitSet()
