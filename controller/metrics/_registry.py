"""The metric definitions and the recorders the hot paths call.

Hot-path guarantees: recording touches no database and takes no lock (the
per-request metrics are ``_hot`` counters and histograms, updated on the event
loop and exported when scraped). Labels are bounded: route templates, HTTP
methods (others count as ``OTHER``), statuses, deployment names, command kinds,
API key ids and limit names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from controller.metrics._hot import HotCollector, HotCounter, HotHistogram
from controller.metrics._state import LiveFleet, StateCollector
from shared.proto.lmstack.v1 import agent_pb2

if TYPE_CHECKING:
    from controller.store import Database

# prometheus_client's default buckets, for HTTP latency.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric of one controller, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.state = StateCollector()
        self.registry.register(self.state)
        self._define_http()
        self._define_fleet()
        self._define_gateway()
        self.registry.register(
            HotCollector(
                [
                    self.http_requests,
                    self.http_latency,
                    self.gateway_requests,
                    self.gateway_errors,
                    self.prompt_tokens,
                    self.completion_tokens,
                    self.ttft,
                    self.gateway_latency,
                    self.refused,
                ]
            )
        )

    def _define_http(self) -> None:
        self.http_requests = HotCounter(
            "lmstack_http_requests", "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
        )  # fmt: skip
        self.http_latency = HotHistogram(
            "lmstack_http_request_duration_seconds", "HTTP request latency, by route and method",
            ["route", "method"], _HTTP_BUCKETS,
        )  # fmt: skip

    def _define_fleet(self) -> None:
        self.commands_sent = Counter(
            "lmstack_agent_commands_sent", "Commands written to agent streams, by kind",
            ["command"], registry=self.registry,
        )  # fmt: skip
        self.command_latency = Histogram(
            "lmstack_agent_command_duration_seconds",
            "From writing a command to the agent's first answer to it, by kind",
            ["command"], buckets=_COMMAND_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def _define_gateway(self) -> None:
        self.gateway_requests = HotCounter(
            "lmstack_gateway_requests", "Gateway requests routed to a deployment, by status",
            ["deployment", "status"],
        )  # fmt: skip
        self.gateway_errors = HotCounter(
            "lmstack_gateway_errors",
            "Gateway failures (engine unreachable, broken or too slow), before or during a stream",
            ["deployment", "code"],
        )  # fmt: skip
        self.prompt_tokens = HotCounter(
            "lmstack_gateway_prompt_tokens", "Prompt tokens reported by engines", ["deployment"]
        )
        self.completion_tokens = HotCounter(
            "lmstack_gateway_completion_tokens", "Completion tokens reported by engines",
            ["deployment"],
        )  # fmt: skip
        self.ttft = HotHistogram(
            "lmstack_gateway_time_to_first_token_seconds",
            "Streams: from the request reaching the gateway to its first event sent on",
            ["deployment"], _TTFT_BUCKETS,
        )  # fmt: skip
        self.gateway_latency = HotHistogram(
            "lmstack_gateway_request_duration_seconds",
            "Gateway request latency (whole stream for streams), by deployment",
            ["deployment"], _LLM_BUCKETS,
        )  # fmt: skip
        self.refused = HotCounter(
            "lmstack_gateway_refused",
            "Gateway requests refused by a limit of their API key or user, by key "
            "('' for login tokens) and limit (rpm, tpm, max_parallel, token_budget)",
            ["key", "reason"],
        )

    # ------------------------------------------------------------ scrape time

    def watch_fleet(self, fleet: LiveFleet) -> None:
        """Report this fleet's live sessions (streams, GPUs) when scraped."""
        self.state.fleet = fleet

    def watch_gateway(self, in_flight: Callable[[], Mapping[str, int]]) -> None:
        """Report the gateway's requests in flight per deployment when scraped."""
        self.state.in_flight = in_flight

    async def refresh(self, db: Database) -> None:
        """Read the store's counts; called just before each scrape."""
        await self.state.refresh(db)

    # ------------------------------------------------------------ HTTP

    def record_http(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"
        self.http_requests.inc((route, method, status))
        self.http_latency.observe((route, method), seconds)

    # ------------------------------------------------------------ fleet

    def command_timer(self, clock: Callable[[], float] = time.monotonic) -> CommandTimer:
        return CommandTimer(self, clock)

    # ------------------------------------------------------------ gateway

    def gateway_request(self, deployment: str, status: int, seconds: float) -> None:
        self.gateway_requests.inc((deployment, status))
        self.gateway_latency.observe((deployment,), seconds)

    def gateway_error(self, deployment: str, code: str) -> None:
        self.gateway_errors.inc((deployment, code))

    def gateway_tokens(self, deployment: str, prompt: int, completion: int) -> None:
        if prompt > 0:
            self.prompt_tokens.inc((deployment,), prompt)
        if completion > 0:
            self.completion_tokens.inc((deployment,), completion)

    def gateway_refused(self, key: str, reason: str) -> None:
        """A request a key's or user's limit refused; ``key``: "" for login tokens."""
        self.refused.inc((key, reason))

    def first_token(self, deployment: str, seconds: float) -> None:
        self.ttft.observe((deployment,), seconds)


def _awaited_answer(message: agent_pb2.ControllerMessage) -> tuple[str, str] | None:
    """What answers a command: a status report of its deployment (Deploy,
    Stop) or a reply carrying its request id (FetchLogs, ListContainers)."""
    kind = message.WhichOneof("payload")
    if kind == "deploy":
        return ("deployment", message.deploy.deployment_id)
    if kind == "stop":
        return ("deployment", message.stop.deployment_id)
    if kind == "fetch_logs":
        return ("request", message.fetch_logs.request_id)
    if kind == "list_containers":
        return ("request", message.list_containers.request_id)
    return None


def _answer_of(message: agent_pb2.AgentMessage) -> tuple[str, str] | None:
    kind = message.WhichOneof("payload")
    if kind == "deployment_status":
        return ("deployment", message.deployment_status.deployment_id)
    if kind == "logs_result":
        return ("request", message.logs_result.request_id)
    if kind == "containers":
        return ("request", message.containers.request_id)
    return None


class CommandTimer:
    """Commands sent on one agent stream and their latency: from writing the
    command to the agent's first answer to it (the first ``DeploymentStatus``
    for a Deploy or Stop, the reply for FetchLogs and ListContainers).

    One per stream, used on the event loop only. A command still unanswered
    when a newer one awaits the same answer is superseded (not observed); the
    ones unanswered when the stream ends are dropped with it.
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._clock = clock
        self._waiting: dict[tuple[str, str], tuple[str, float]] = {}

    def sent(self, message: agent_pb2.ControllerMessage) -> None:
        kind = message.WhichOneof("payload") or "unknown"
        self._metrics.commands_sent.labels(kind).inc()
        awaited = _awaited_answer(message)
        if awaited is not None:
            self._waiting[awaited] = (kind, self._clock())

    def received(self, message: agent_pb2.AgentMessage) -> None:
        answer = _answer_of(message)
        waiting = self._waiting.pop(answer, None) if answer is not None else None
        if waiting is not None:
            kind, sent_at = waiting
            self._metrics.command_latency.labels(kind).observe(self._clock() - sent_at)
