"""Errors on ``/v1`` in OpenAI's shape: ``{"error": {"message", "type", "code"}}``.

The official SDKs map the HTTP status to their exception types (401 →
AuthenticationError, 404 → NotFoundError, ≥ 500 → InternalServerError, …),
so the status is what matters most; ``code`` says precisely what happened.
A refusal may name its own ``type`` (429: ``rate_limit_exceeded`` or
``insufficient_quota``) and carry ``headers`` (``Retry-After``, ``x-ratelimit-*``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web

from controller.http import Handler
from shared.errors import APIError, RateLimited

log = logging.getLogger("lmstack.gateway")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "api_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class GatewayError(APIError):
    """An APIError with OpenAI's ``code`` (and its ``type`` and response ``headers``
    when the status alone does not say them)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.type = type
        self.headers = headers


def model_not_found(name: str) -> GatewayError:
    return GatewayError(
        404, "model_not_found", f"The model '{name}' does not exist or you do not have access to it"
    )


def error_payload(
    status: int, message: str, code: str | None, type: str | None = None
) -> dict[str, object]:
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    code: str | None,
    type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=json.dumps(error_payload(status, message, code, type)).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


_DEFAULT_CODES = {401: "invalid_api_key", 403: "permission_denied", 404: "not_found"}


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc.status_code, exc.detail, exc.code, exc.type, exc.headers)
    except RateLimited as exc:
        return error_response(429, exc.detail, exc.code, exc.type, exc.headers)
    except APIError as exc:
        return error_response(exc.status_code, exc.detail, _DEFAULT_CODES.get(exc.status_code))
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        return error_response(exc.status_code, exc.reason, _DEFAULT_CODES.get(exc.status_code))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error", "internal_error")
