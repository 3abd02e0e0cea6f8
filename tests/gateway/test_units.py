"""Pure pieces of the gateway: SSE pass-through, usage extraction, usage days."""

from __future__ import annotations

import json
import time

import pytest

from controller.gateway import usage
from controller.gateway.proxy import _usage_of
from controller.gateway.sse import SSEPassThrough


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CHUNK = event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


def test_events_split_across_reads_are_forwarded_whole() -> None:
    sse = SSEPassThrough(forward_usage_chunk=False)
    stream = CHUNK + CHUNK + USAGE + DONE
    out = b"".join(sse.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out == CHUNK + CHUNK + DONE
    assert sse.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    assert sse.done and sse.rest() == b""


def test_usage_chunk_kept_when_the_client_asked() -> None:
    sse = SSEPassThrough(forward_usage_chunk=True)
    assert sse.feed(CHUNK + USAGE + DONE) == CHUNK + USAGE + DONE
    assert sse.usage is not None


def test_comments_crlf_and_partial_tail() -> None:
    sse = SSEPassThrough(forward_usage_chunk=False)
    assert sse.feed(b": ping\r\n\r\n" + CHUNK + b'data: {"cho') == b": ping\r\n\r\n" + CHUNK
    assert not sse.done
    assert sse.rest() == b'data: {"cho'


def test_usage_of_answers() -> None:
    answer = {
        "id": "x",
        "choices": [{"text": '"usage": {"fake": 1}'}],
        "usage": {"prompt_tokens": 4},
    }
    assert _usage_of(json.dumps(answer).encode()) == {"prompt_tokens": 4}
    assert _usage_of(b'{"usage": null}') is None
    assert _usage_of(b'{"choices": []}') is None
    assert _usage_of(b'{"usage": {broken') is None
    assert _usage_of(b"not json at all") is None


def test_usage_day_is_the_utc_date_and_rolls_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # 2023-11-14T22:13:20Z
    assert usage.today() == "2023-11-14"
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0 + 2 * 3600)
    assert usage.today() == "2023-11-15"
