"""Prometheus metrics of the controller, served as text at ``GET /metrics``
(``controller.api.metrics``). This package is a leaf: it imports no other
subsystem; the fleet and the gateway report to it.

Each application owns one ``Metrics`` (its own ``CollectorRegistry``, never the
process-wide default), so several controllers in one process keep separate
numbers. What is measured, and where:

* HTTP: every request by route template (never the raw path), method and
  status, with a latency histogram (``http_middleware``).
* Fleet: agent streams connected, per-GPU memory, utilization and temperature
  (from the live sessions' heartbeats), commands sent and their latency
  (``CommandTimer``), read or recorded by the fleet hub and servicer.
* Store: workers by status and deployments by status and backend, counted when
  scraped.
* Gateway: requests by deployment and status, gateway errors, prompt and
  completion tokens, time to the first streamed event, latency (recorded by
  the proxy for requests routed to a deployment); requests refused by a key's or
  user's limit, per API key and limit (``lmstack_gateway_refused_total``).
"""

from controller.metrics._http import http_middleware
from controller.metrics._registry import CommandTimer, Metrics

__all__ = [
    "CommandTimer",
    "Metrics",
    "http_middleware",
]
