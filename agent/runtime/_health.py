"""The engine health check: one GET of its health endpoint, 200 or not.

Guarantee: ``healthy`` never raises for an engine that is not there yet or went
away (refused, reset, timed out): that is ``False``, as is any status but 200.
"""

from __future__ import annotations

import aiohttp

# Seconds one health request may take: a hung engine is an unhealthy one.
HEALTH_REQUEST_TIMEOUT = 2.0


def health_url(host: str, port: int, path: str) -> str:
    return f"http://{host}:{port}{path}"


def http_session() -> aiohttp.ClientSession:
    """A client session for health checks (the caller closes it)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_REQUEST_TIMEOUT))


async def healthy(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        # Not listening yet, or the port proxy dropped the connection: not ready.
        return False
