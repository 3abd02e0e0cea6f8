"""A stdlib-only, OpenAI-compatible stand-in for vLLM's API server, for tests.

It takes vLLM's command line, that of ``vllm serve`` (the ``vllm/vllm-openai`` image's
entrypoint): the model as the positional argument, or as the ``--model`` flag upstream
deprecates (the positional wins, as in vLLM); unknown flags are tolerated. It serves:

* ``GET /health`` -- 200 once ready (``STANDIN_START_DELAY`` seconds after start), 503 before;
* ``GET /v1/models`` -- an OpenAI list with the served model name;
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` -- a deterministic reply of
  ``max_tokens`` words (default 16) with ``usage``; ``"stream": true`` sends SSE chunks, one
  flush per chunk, then ``data: [DONE]``; ``stream_options.include_usage`` adds a final chunk
  with empty ``choices`` and ``usage``, as vLLM and OpenAI do;
* ``POST /v1/embeddings`` -- deterministic vectors with ``usage``.

Started as ``serve`` (the Ollama image's command: ``ollama serve``) it behaves like Ollama
instead: it listens on ``OLLAMA_HOST`` (default ``127.0.0.1:11434``), serves no model until
one is pulled, answers ``GET /api/version``, and ``POST /api/pull`` (``{"model", "stream":
false}``) adds the model to those it serves after ``STANDIN_PULL_DELAY`` seconds, or fails
as Ollama does (500, ``{"error": ...}``) when ``STANDIN_PULL_FAIL`` is set.

Errors use OpenAI's shape (``{"error": {"message", "type", "code"}}``). SIGTERM exits 0.
``STANDIN_CRASH_AFTER`` seconds after start the process prints an error line and exits with
``STANDIN_EXIT_CODE`` (default 3); with ``STANDIN_CRASH_AFTER_TOKENS`` it does so right
after it has streamed that many tokens (a crash in the middle of a stream, whenever the
stream comes); ``STANDIN_TOKEN_DELAY`` is the time per generated token
(streamed or not). One line
per request goes to stdout (flushed), after a startup line that echoes the arguments.

Runs on Python 3.11 alone: the test image holds nothing but the interpreter and its stdlib.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import signal
import sys
import threading
import time
import uuid
from types import FrameType
from typing import Any

DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIM = 8
WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def log(message: str) -> None:
    # Flushed per line: tests read container logs while the engine still runs.
    print(message, flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """vLLM's arguments, and the rest; Ollama's ``serve`` stays first of the rest."""
    parser = argparse.ArgumentParser(prog="standin_engine", add_help=True)
    parser.add_argument("model_tag", nargs="?", default=None)
    parser.add_argument("--model", default="standin-model")
    parser.add_argument("--served-model-name", nargs="*", default=None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    args, unknown = parser.parse_known_args(argv)
    if args.model_tag == "serve":
        # Ollama's command (``ollama serve``), not a model.
        return args, ["serve", *unknown]
    if args.model_tag is not None:
        args.model = args.model_tag
    return args, unknown


def count_tokens(value: Any) -> int:
    """Whitespace-separated words in a prompt, messages list or input list."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_tokens(item) for item in value)
    if isinstance(value, dict):
        return count_tokens(value.get("content", ""))
    return 0


def reply_words(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(max(n, 0))]


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255.0, 6) for b in digest[:EMBEDDING_DIM]]


class Engine:
    """State shared by all handler threads (read-only after start, except the models an
    Ollama-style engine pulls)."""

    def __init__(self, args: argparse.Namespace, unknown: list[str]) -> None:
        self.ollama = bool(unknown) and unknown[0] == "serve"
        self.model = None if self.ollama else args.model
        names = [] if self.ollama else args.served_model_name or [args.model]
        self.served_names: list[str] = list(names)
        self.args = args
        self.unknown = unknown
        self.started = time.monotonic()
        self.start_delay = float(os.environ.get("STANDIN_START_DELAY", "0") or 0)
        self.token_delay = float(os.environ.get("STANDIN_TOKEN_DELAY", "0") or 0)
        self.crash_after_tokens = int(os.environ.get("STANDIN_CRASH_AFTER_TOKENS", "0") or 0)
        self.streamed = 0

    def ready(self) -> bool:
        return time.monotonic() - self.started >= self.start_delay

    def knows(self, model: str | None) -> bool:
        return model is None or model in self.served_names or model == self.model

    def pulled(self, model: str) -> None:
        # A list append is atomic; a model pulled twice at once may be listed twice.
        if model not in self.served_names:
            self.served_names.append(model)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small SSE chunks must leave at once; Nagle would batch them and skew TTFT.
    disable_nagle_algorithm = True
    server_version = "standin-engine/1.0"
    engine: Engine  # set on the subclass built in main()

    # -- plumbing -----------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        # The request line is logged by ``_log_request`` instead (stdout, flushed).
        pass

    def _log_request(self, status: int) -> None:
        log(f'standin: {self.command} {self.path} -> {status} ("{self.client_address[0]}")')

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._log_request(status)

    def _error(self, status: int, message: str, err_type: str, code: str | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": err_type, "code": code}})

    def _read_json(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._error(400, "request body is not valid JSON", "invalid_request_error")
            return None
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object", "invalid_request_error")
            return None
        return body

    # -- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/version" and self.engine.ollama:
            self._send_json(200, {"version": "0.0.0-standin"})
        elif path == "/health":
            if self.engine.ready():
                self._send_json(200, {"status": "ok"})
            else:
                self._error(503, "engine is starting", "service_unavailable")
        elif path == "/v1/models":
            created = int(time.time())
            data = [
                {"id": name, "object": "model", "created": created, "owned_by": "standin"}
                for name in self.engine.served_names
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._error(404, f"no route for GET {path}", "not_found_error", "not_found")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {
            "/v1/chat/completions": self._completions,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }
        if self.engine.ollama and path == "/api/pull":
            body = self._read_json()
            if body is not None:
                self._pull(body)
            return
        route = routes.get(path)
        if route is None:
            # Drain the body so keep-alive stays in sync.
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._error(404, f"no route for POST {path}", "not_found_error", "not_found")
            return
        body = self._read_json()
        if body is None:
            return
        if not self.engine.ready():
            self._error(503, "engine is starting", "service_unavailable")
            return
        model = body.get("model")
        if not self.engine.knows(model):
            self._error(404, f"The model `{model}` does not exist.", "NotFoundError", "404")
            return
        route(path, body)

    def _pull(self, body: dict[str, Any]) -> None:
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model:
            self._send_json(400, {"error": "model is required"})
            return
        time.sleep(float(os.environ.get("STANDIN_PULL_DELAY", "0") or 0))
        if os.environ.get("STANDIN_PULL_FAIL"):
            self._send_json(500, {"error": "pull model manifest: file does not exist"})
            return
        self.engine.pulled(model)
        log(f"standin: pulled {model}")
        self._send_json(200, {"status": "success"})

    def _completions(self, path: str, body: dict[str, Any]) -> None:
        chat = path.endswith("/chat/completions")
        if chat:
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                self._error(400, "messages must be a non-empty list", "BadRequestError")
                return
            prompt_tokens = count_tokens(body["messages"])
        else:
            if "prompt" not in body:
                self._error(400, "prompt is required", "BadRequestError")
                return
            prompt_tokens = count_tokens(body["prompt"])
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", DEFAULT_MAX_TOKENS))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            self._error(400, "max_tokens must be a positive integer", "BadRequestError")
            return
        words = reply_words(max_tokens)
        model = body.get("model") or self.engine.served_names[0]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        prefix = "chatcmpl" if chat else "cmpl"
        meta = {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            self._stream(chat, meta, words, usage if include_usage else None)
            return
        if self.engine.token_delay:
            # Generation takes as long whether or not it is streamed.
            time.sleep(self.engine.token_delay * len(words))
        text = " ".join(words)
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        self._send_json(200, {**meta, "choices": [choice], "usage": usage})

    def _stream(
        self, chat: bool, meta: dict[str, Any], words: list[str], usage: dict[str, int] | None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # No Content-Length: the stream ends when the connection closes.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {**meta, "object": obj}
        try:
            if chat:
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
                self._event({**base, "choices": [{**first, "finish_reason": None}]})
            for i, word in enumerate(words):
                if self.engine.token_delay:
                    time.sleep(self.engine.token_delay)
                piece = word if i == 0 else " " + word
                last = i == len(words) - 1
                finish = "length" if last else None
                if chat:
                    choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}}
                else:
                    choice = {"index": 0, "text": piece, "logprobs": None}
                self._event({**base, "choices": [{**choice, "finish_reason": finish}]})
                self.engine.streamed += 1
                if self.engine.streamed == self.engine.crash_after_tokens:
                    _crash(f"after {self.engine.streamed} streamed tokens")
            if usage is not None:
                self._event({**base, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log(f"standin: client went away during {self.path}")
            return
        self._log_request(200)

    def _event(self, chunk: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def _embeddings(self, _path: str, body: dict[str, Any]) -> None:
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        else:
            self._error(400, "input must be a string or a list of strings", "BadRequestError")
            return
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(text)}
            for i, text in enumerate(inputs)
        ]
        tokens = count_tokens(inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or self.engine.served_names[0],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _crash_later(seconds: float) -> None:
    time.sleep(seconds)
    _crash(f"after {seconds}s")


def _crash(when: str) -> None:
    code = int(os.environ.get("STANDIN_EXIT_CODE", "3") or 3)
    log(f"standin: ERROR simulated engine crash {when} (exit code {code})")
    sys.stderr.write("standin: RuntimeError: simulated CUDA failure\n")
    sys.stderr.flush()
    # os._exit: a crash does not unwind; the server thread must not keep the process alive.
    os._exit(code)


class Server(http.server.ThreadingHTTPServer):
    # The stdlib's listen backlog of 5 drops connections a proxy opens in a
    # burst (64 at once in the gateway benchmark): each then waits out a 1 s
    # SYN retry. Real engines (uvicorn) listen with a backlog of 2048.
    request_queue_size = 1024


def main(argv: list[str] | None = None) -> int:
    args, unknown = parse_args(sys.argv[1:] if argv is None else argv)
    engine = Engine(args, unknown)
    if engine.ollama:
        host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
        args.host, args.port = host or "127.0.0.1", int(port)
    handler = type("BoundHandler", (Handler,), {"engine": engine})
    server = Server((args.host, args.port), handler)
    server.daemon_threads = True

    def on_term(signum: int, _frame: FrameType | None) -> None:
        log(f"standin: received signal {signum}, shutting down")
        # shutdown() blocks until serve_forever returns, so it runs on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    crash_after = os.environ.get("STANDIN_CRASH_AFTER")
    if crash_after:
        threading.Thread(target=_crash_later, args=(float(crash_after),), daemon=True).start()

    log(
        "standin: starting engine "
        f"model={args.model} served_model_name={','.join(engine.served_names)} "
        f"host={args.host} port={args.port} "
        f"gpu_memory_utilization={args.gpu_memory_utilization} "
        f"max_model_len={args.max_model_len} tensor_parallel_size={args.tensor_parallel_size} "
        f"dtype={args.dtype} extra={' '.join(unknown)} argv={' '.join(sys.argv[1:])}"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log("standin: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
