"""What every REST body shares: types, strictness, errors, auth."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from controller.store.timeutil import iso_z
from shared import status
from shared.engines import BackendName

Timestamp = Annotated[
    datetime, PlainSerializer(iso_z, return_type=str, when_used="json-unless-none")
]
Backend: TypeAlias = BackendName
# Status fields take the enums of ``shared.status``. To pydantic they are a Literal
# of the members: the OpenAPI document lists the values inline (an Enum would add a
# component) and strict bodies accept the plain strings.
if TYPE_CHECKING:
    DeploymentStatus: TypeAlias = status.DeploymentStatus
    WorkerStatus: TypeAlias = status.WorkerStatus
else:
    DeploymentStatus = Literal[tuple(status.DeploymentStatus)]
    WorkerStatus = Literal[tuple(status.WorkerStatus)]
DEPLOYMENT_STATUSES: tuple[str, ...] = tuple(status.DeploymentStatus)

# Deployment names become container names (``lmstack-<name>``) and model ids.
DeploymentName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", max_length=63)
]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=72)]


class Strict(BaseModel):
    """A request body: unknown fields are rejected and JSON types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters: strings coerced to the declared types."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- errors


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str
    status_code: int
    errors: list[FieldError] | None = None


# ---------------------------------------------------------------- auth


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"
