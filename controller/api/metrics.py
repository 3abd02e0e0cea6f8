"""``GET /metrics``: the text exposition format, behind the bearer token unless
``LMSTACK_METRICS_PUBLIC=1``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller import appkeys
from controller.http import Endpoint

PATH = "/metrics"


async def serve_metrics(request: web.Request) -> web.Response:
    metrics = request.app[appkeys.METRICS]
    await metrics.refresh(request.app[appkeys.DATABASE])
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def metrics_endpoint(public: bool) -> Endpoint:
    return Endpoint(
        "GET",
        PATH,
        serve_metrics,
        "Prometheus metrics (text exposition format)",
        "monitoring",
        access="public" if public else "user",
        responses={200: None},
    )


def document_metrics(doc: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the answer of ``/metrics`` described as text."""
    ok = doc["paths"][PATH]["get"]["responses"]["200"]
    ok["content"] = {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}
    return doc
