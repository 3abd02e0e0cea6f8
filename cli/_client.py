"""A small synchronous client of the REST API over ``urllib``.

Every failure leaves as a ``CliError`` subclass carrying the API's ``detail``
(for 422 it names each invalid field), so the caller only prints and exits.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cli._errors import ApiError, AuthError, Unreachable

TIMEOUT_SECONDS = 30.0


class ApiClient:
    def __init__(self, url: str, token: str = "", timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One call; the decoded JSON body, or None for an empty one (204)."""
        req = self._build(method, path, body, params)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read()) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the controller at {self.url}: {reason}") from exc
        return json.loads(raw) if raw else None

    def _build(
        self, method: str, path: str, body: Any, params: dict[str, Any] | None
    ) -> urllib.request.Request:
        url = self.url + path
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # ``_config.normalise_url`` lets only http and https URLs through.
        return urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310


def _api_error(status: int, raw: bytes) -> ApiError:
    message = _detail(raw) or f"HTTP {status}"
    if status == 401:
        return AuthError(status, f"{message} (sign in with `lmstack login` or set LMSTACK_TOKEN)")
    if status == 403:
        return AuthError(status, message)
    return ApiError(status, message)


def _detail(raw: bytes) -> str:
    """The error body's ``detail`` (422 details already name each bad field)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:500]
    return str(body.get("detail", "")) if isinstance(body, dict) else ""
