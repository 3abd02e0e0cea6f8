"""How the ``/v1`` gateway routes appear in the OpenAPI document (they are
served by the gateway sub-application, with OpenAI-shaped errors)."""

from __future__ import annotations

from controller.gateway.handlers import list_models, proxy_handler
from controller.http import Endpoint
from controller.schemas import OpenAIError, OpenAIRequest, OpenAIResponse

_ERRORS = (400, 401, 404, 502, 503, 504)

ENDPOINTS = [
    Endpoint(
        "GET", "/v1/models", list_models, "Running models this key may call", "gateway",
        responses={200: OpenAIResponse}, error_model=OpenAIError,
    ),
    *[
        Endpoint(
            "POST", f"/v1/{path}", proxy_handler, summary, "gateway", body=OpenAIRequest,
            responses={200: OpenAIResponse}, errors=_ERRORS, error_model=OpenAIError,
        )
        for path, summary in (
            ("chat/completions", "Chat completion (JSON or SSE stream)"),
            ("completions", "Text completion (JSON or SSE stream)"),
            ("embeddings", "Embeddings"),
        )
    ],
]  # fmt: skip
