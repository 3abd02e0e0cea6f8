"""OpenAI's rate-limit headers: ``x-ratelimit-*`` on every answer, ``Retry-After`` on 429s.

Resets are written as OpenAI writes them (Go durations: ``20ms``, ``1s``,
``1.5s``, ``6m0s``, ``2h0m0s``). A refusal carries ``Retry-After`` in whole
seconds (rounded up, at least 1, as HTTP wants) and ``retry-after-ms`` (which
the openai SDKs read first, so they wait exactly as long as needed); an
exhausted budget also carries ``x-should-retry: false``: retrying before the
period ends cannot succeed.
"""

from __future__ import annotations

import math

# (remaining, limit, seconds until the window is back to its initial state)
Numbers = tuple[int, int, float]


def duration(seconds: float) -> str:
    """``seconds`` (>= 0) as OpenAI's reset headers write it, to the millisecond."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    text = _DURATIONS.get(ms)
    if text is None:
        if len(_DURATIONS) >= _DURATIONS_MAX:
            _DURATIONS.clear()
        text = _DURATIONS[ms] = _format_ms(ms)
    return text


# Resets repeat (a window's reset is often exactly its length): written once each.
_DURATIONS: dict[int, str] = {}
_DURATIONS_MAX = 4096


def _format_ms(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_headers(requests: Numbers | None, tokens: Numbers | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if requests is not None:
        remaining, limit, reset = requests
        headers["x-ratelimit-limit-requests"] = str(limit)
        headers["x-ratelimit-remaining-requests"] = str(remaining)
        headers["x-ratelimit-reset-requests"] = duration(reset)
    if tokens is not None:
        remaining, limit, reset = tokens
        headers["x-ratelimit-limit-tokens"] = str(limit)
        headers["x-ratelimit-remaining-tokens"] = str(remaining)
        headers["x-ratelimit-reset-tokens"] = duration(reset)
    return headers


def refusal_headers(headers: dict[str, str], retry_after: float, *, final: bool) -> dict[str, str]:
    """``headers`` plus when to retry; ``final``: not before the period ends."""
    headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    if final:
        headers["x-should-retry"] = "false"
    return headers
