"""``lmstack workers``: list the GPU hosts (with their labels) and show one with its GPUs and
deployments."""

from __future__ import annotations

from cli._commands._context import Context, resolve, say, show_table
from cli._commands.deployments import DEPLOYMENT_COLUMNS
from cli._output import Column, Row, col, print_fields, print_table


def _gpus(row: Row) -> str:
    info = row.get("gpu_info") or {}
    devices = info.get("devices") or []
    if not devices:
        return "none"
    names = sorted({d.get("name", "?") for d in devices})
    return f"{len(devices)}x " + "/".join(names) + (" (simulated)" if info.get("simulated") else "")


def labels(row: Row) -> str:
    """``gpu=a100,zone=eu``: the agent's labels (``--label``), sorted by key."""
    return ",".join(f"{k}={v}" for k, v in sorted((row.get("labels") or {}).items()))


WORKER_COLUMNS = [
    col("ID"),
    col("Name"),
    col("Status"),
    col("Address", "advertise_address"),
    Column("GPUs", _gpus),
    Column("Labels", labels),
    col("Agent", "agent_version"),
    col("Last heartbeat", "last_heartbeat"),
]
GPU_COLUMNS = [
    col("Index"),
    col("Name"),
    col("Memory MiB", "memory"),
    col("Used MiB", "memory_used"),
    col("Util %", "utilization"),
    col("Temp C", "temperature"),
]


def workers_list(ctx: Context) -> int:
    return show_table(ctx, "/api/workers", WORKER_COLUMNS)


def workers_get(ctx: Context) -> int:
    client = ctx.client()
    body = client.get(f"/api/workers/{resolve(client, 'workers', ctx.args.ref, 'name')}")
    return ctx.show(body, lambda: _print_worker(body))


def _print_worker(body: Row) -> None:
    print_fields(body, [*WORKER_COLUMNS, col("Runtime error", "runtime_error")])
    say("\nGPUs:")
    print_table((body.get("gpu_info") or {}).get("devices") or [], GPU_COLUMNS)
    say("\nDeployments:")
    columns = [c for c in DEPLOYMENT_COLUMNS if c.header != "Worker"]
    print_table(body.get("deployments") or [], columns)
