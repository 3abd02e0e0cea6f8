"""The gateway's bodies, documented in the OpenAPI document only."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

# ---------------------------------------------------------------- gateway (documented only)


class OpenAIRequest(BaseModel):
    """An OpenAI request body; fields other than these pass through to the engine."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The deployment name")
    stream: bool | None = None


class OpenAIResponse(BaseModel):
    """The engine's OpenAI-compatible answer, passed through (SSE when streaming)."""

    model_config = ConfigDict(extra="allow")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
