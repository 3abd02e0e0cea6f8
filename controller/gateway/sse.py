"""Server-sent events passing through the gateway, one complete event at a time.

``SSEPassThrough.feed`` takes whatever bytes the engine sent and returns the
complete events to forward now (never holding a complete event back), taking
``usage`` from the chunk that carries it. When the gateway asked the engine for
usage on the client's behalf (``stream_options.include_usage``), the extra
usage-only chunk (empty ``choices``) is dropped before it reaches the client.
"""

from __future__ import annotations

import json
from typing import Any

_SEPARATORS = (b"\r\n\r\n", b"\n\n")


class SSEPassThrough:
    def __init__(self, *, forward_usage_chunk: bool) -> None:
        self._forward_usage_chunk = forward_usage_chunk
        self._buffer = b""
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while True:
            end, sep = self._next_boundary()
            if end < 0:
                break
            event = self._buffer[: end + len(sep)]
            self._buffer = self._buffer[end + len(sep) :]
            if self._keep(event):
                out.append(event)
        return b"".join(out)

    def rest(self) -> bytes:
        """Bytes after the last complete event (an engine that ended mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _next_boundary(self) -> tuple[int, bytes]:
        found = [(self._buffer.find(sep), sep) for sep in _SEPARATORS]
        hits = [(i, sep) for i, sep in found if i >= 0]
        return min(hits) if hits else (-1, b"")

    def _keep(self, event: bytes) -> bool:
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            if b'"usage"' not in payload:
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
                continue
            self.usage = chunk["usage"]
            if not self._forward_usage_chunk and chunk.get("choices") == []:
                return False
        return True
