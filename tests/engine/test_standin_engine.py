"""The stand-in engine on the host (no Docker): its OpenAI surface and its knobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.dockerutil import free_port

SCRIPT = Path(__file__).with_name("standin_engine.py")


def start(port: int, *flags: str, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", str(port), "--host", "127.0.0.1", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    # The startup line is printed just before the server accepts connections.
    assert "standin: starting engine" in proc.stdout.readline()
    return proc


@pytest.fixture
def engine() -> Iterator[str]:
    port = free_port()
    # As vllm serve is called: the model is the positional argument.
    proc = start(port, "m", "--served-model-name", "served", "--unknown-flag", "x")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        if body is None:
            async with http.get(url) as response:
                return response.status, await response.json()
        async with http.post(url, json=body) as response:
            return response.status, await response.json()


async def test_models_and_health(engine: str) -> None:
    assert (await call(f"{engine}/health"))[0] == 200
    status, body = await call(f"{engine}/v1/models")
    assert status == 200
    assert [m["id"] for m in body["data"]] == ["served"]


async def test_chat_completion(engine: str) -> None:
    status, body = await call(
        f"{engine}/v1/chat/completions",
        {"model": "served", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4},
    )
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "lorem ipsum dolor sit"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_streaming_with_usage(engine: str) -> None:
    request = {
        "model": "served",
        "prompt": "one two",
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{engine}/v1/completions", json=request) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = (await response.read()).decode()
    events = [line[len("data: ") :] for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "lorem ipsum dolor"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


async def test_embeddings(engine: str) -> None:
    status, body = await call(f"{engine}/v1/embeddings", {"input": ["x y", "z"]})
    assert status == 200
    assert len(body["data"]) == 2
    assert body["usage"]["prompt_tokens"] == 3
    again = await call(f"{engine}/v1/embeddings", {"input": "x y"})
    assert again[1]["data"][0]["embedding"] == body["data"][0]["embedding"]


async def test_openai_errors(engine: str) -> None:
    status, body = await call(f"{engine}/v1/nope", {})
    assert status == 404 and "message" in body["error"]
    status, body = await call(f"{engine}/v1/completions", {"model": "other", "prompt": "x"})
    assert status == 404 and body["error"]["type"] == "NotFoundError"
    status, body = await call(f"{engine}/v1/chat/completions", {"messages": []})
    assert status == 400


def test_sigterm_exits_zero() -> None:
    proc = start(free_port())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "standin: stopped" in out


def test_crash_knob() -> None:
    started = time.monotonic()
    proc = start(free_port(), STANDIN_CRASH_AFTER="0.2", STANDIN_EXIT_CODE="7")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 7
    assert "simulated engine crash" in out
    assert time.monotonic() - started < 5


async def test_start_delay_knob() -> None:
    port = free_port()
    proc = start(port, STANDIN_START_DELAY="30")
    try:
        status, _ = await call(f"http://127.0.0.1:{port}/health")
        assert status == 503
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_started_as_serve_it_behaves_like_ollama() -> None:
    listen = free_port()  # from OLLAMA_HOST, as Ollama does; --port is ignored
    proc = start(free_port(), "serve", OLLAMA_HOST=f"127.0.0.1:{listen}")
    try:
        base = f"http://127.0.0.1:{listen}"
        assert await call(f"{base}/api/version") == (200, {"version": "0.0.0-standin"})
        chat = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}]}
        assert (await call(f"{base}/v1/chat/completions", chat))[0] == 404  # nothing pulled
        pull = {"model": "qwen2.5:0.5b", "stream": False}
        assert await call(f"{base}/api/pull", pull) == (200, {"status": "success"})
        status, body = await call(f"{base}/v1/chat/completions", {**chat, "max_tokens": 2})
        assert status == 200 and body["model"] == "qwen2.5:0.5b"
    finally:
        stop(proc)


async def test_a_failing_ollama_pull() -> None:
    listen = free_port()
    proc = start(free_port(), "serve", OLLAMA_HOST=f"127.0.0.1:{listen}", STANDIN_PULL_FAIL="1")
    try:
        status, body = await call(f"http://127.0.0.1:{listen}/api/pull", {"model": "x:1b"})
        assert status == 500 and "file does not exist" in body["error"]
    finally:
        stop(proc)
