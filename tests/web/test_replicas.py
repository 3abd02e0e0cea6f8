"""Replicas in the dashboard, in headless Chromium against the real controller and
two live agents (in-memory runtimes, fake-NVML GPUs): the Replicas field of the
create form, ready/desired in the list, the instances table, scale (and its
409), update (the API's 422 at the config field, then a rolling update), stop /
start, worker labels in the list and on the worker's page, and no change
controls for a non-admin."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import Controller
from tests.fleetutil import RunningAgent, run_agent
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually
from tests.web.browsing import ADMIN_PASSWORD, narrate, shot, sign_in

NAME = "tiny-replicas"
VIEWER_PASSWORD = "viewer-password-1"

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=10_000)


@dataclass
class Fleet:
    ctl: Controller
    agents: dict[str, RunningAgent]


@pytest.fixture
async def fleet(controller: Controller, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Agents ``gpu-a`` (labelled) and ``gpu-b``, two GPUs each, disjoint engine
    port ranges."""
    async with (
        run_agent(
            controller, MemoryRuntime(), tmp_path / "a", name="gpu-a",
            engine_port_range="41000-41009", labels={"gpu": "h100", "zone": "eu"},
        ) as a,
        run_agent(
            controller, MemoryRuntime(), tmp_path / "b", name="gpu-b",
            engine_port_range="41010-41019",
        ) as b,
    ):  # fmt: skip
        yield Fleet(controller, {"gpu-a": a, "gpu-b": b})


async def stored(ctl: Controller, deployment_id: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", f"/api/deployments/{deployment_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def instance_rows(page: Page, count: int) -> None:
    """The instances table shows ``count`` instances, each running."""
    rows = page.get_by_role("table", name="Instances").locator("tbody tr")
    await expect(rows).to_have_count(count)
    await expect(rows.locator(".badge")).to_have_text(["running"] * count)


async def test_replicas_scale_update_stop_start(fleet: Fleet, browser: Browser) -> None:
    ctl = fleet.ctl
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    page = narrate(await context.new_page())
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, ctl.url, "admin", ADMIN_PASSWORD)
    nav = page.get_by_role("navigation", name="Main")

    # -- created with two replicas: one instance per worker, both running
    await nav.get_by_role("link", name="Deployments").click()
    await page.get_by_role("link", name="New deployment").click()
    await page.get_by_label("Name").fill(NAME)
    await page.get_by_label("Model", exact=True).fill("stand-in/tiny")
    await page.get_by_label("Replicas").fill("-1")
    await page.get_by_role("button", name="Create deployment").click()
    await expect(page.locator('.field[data-field="replicas"] .field-error')).not_to_be_empty()
    await expect(page.get_by_label("Replicas")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Replicas").fill("2")
    await page.get_by_role("button", name="Create deployment").click()
    await expect(page.get_by_role("heading", name=NAME)).to_be_visible()
    deployment_id = page.url.rsplit("/", 1)[1]
    await instance_rows(page, 2)
    await expect(page.locator("[data-testid=replicas]")).to_have_text("2/2 ready")
    instances = page.get_by_role("table", name="Instances")
    await expect(instances).to_contain_text("gpu-a")
    await expect(instances).to_contain_text("gpu-b")
    body = await stored(ctl, deployment_id)
    for instance in body["instances"]:
        row = instances.locator(f'tr[data-id="{instance["id"]}"]')
        await expect(row).to_contain_text(instance["id"][:8])
        await expect(row.locator("[data-restarts]")).to_have_text("0")
    await shot(page, "20-deployment-instances")

    # -- scale: more than fit is refused with the API's reason, nothing changes
    scale = page.get_by_role("form", name="Scale")
    await scale.get_by_label("Replicas").fill("50")
    await scale.get_by_role("button", name="Scale").click()
    await expect(scale.get_by_role("alert")).not_to_be_empty()
    assert (await stored(ctl, deployment_id))["replicas"] == 2
    await scale.get_by_label("Replicas").fill("1")
    await scale.get_by_role("button", name="Scale").click()
    await expect(scale.get_by_role("alert")).to_have_count(0)
    await instance_rows(page, 1)
    await expect(page.locator("[data-testid=replicas]")).to_have_text("1/1 ready")
    assert (await stored(ctl, deployment_id))["replicas"] == 1

    # -- update: bad JSON and the API's 422 are shown at the config field
    update = page.get_by_role("form", name="Update")
    config = update.get_by_label("Config (JSON object)")
    config_error = update.locator('.field[data-field="config"] .field-error')
    await config.fill("{not json")
    await update.get_by_role("button", name="Roll out update").click()
    await expect(config_error).to_contain_text("Not valid JSON")
    await config.fill(json.dumps({"max_model_len": -5}))
    await update.get_by_role("button", name="Roll out update").click()
    await expect(config_error).to_contain_text("greater")
    await expect(config).to_have_attribute("aria-invalid", "true")
    before = await stored(ctl, deployment_id)
    assert before["config"] == {}

    # ... then a real change rolls: one instance of the new spec, running
    await config.fill(json.dumps({"max_model_len": 4096}))
    await update.get_by_role("button", name="Roll out update").click()
    await expect(config_error).to_be_empty()
    after = await eventually(
        lambda: stored(ctl, deployment_id),
        lambda d: (
            d["spec_version"] > before["spec_version"]
            and [(i["spec_version"], i["status"]) for i in d["instances"]]
            == [(d["spec_version"], "running")]
        ),
    )
    assert after["config"] == {"max_model_len": 4096}
    await expect(page.locator(".facts")).to_contain_text('"max_model_len":4096')
    await instance_rows(page, 1)
    await expect(instances).not_to_contain_text("old spec")
    await shot(page, "21-deployment-updated")

    # -- stop (asked first) releases every instance; start brings them back
    await page.get_by_role("button", name="Stop").click()
    await page.get_by_role("dialog").get_by_role("button", name="Stop").click()
    await expect(page.get_by_role("button", name="Start")).to_be_visible()
    await expect(page.locator("[data-testid=no-instances]")).to_contain_text("stopped")
    stopped = await stored(ctl, deployment_id)
    assert stopped["stopped"] is True and stopped["replicas"] == 1
    await shot(page, "22-deployment-stopped")
    await page.get_by_role("button", name="Start").click()
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    await instance_rows(page, 1)
    assert (await stored(ctl, deployment_id))["stopped"] is False

    # -- the list shows ready/desired
    await nav.get_by_role("link", name="Deployments").click()
    row = page.get_by_role("table", name="Deployments").locator(f'tr[data-id="{deployment_id}"]')
    await expect(row.locator("[data-replicas]")).to_have_text("1/1")

    # -- worker labels, in the list and on the worker's page
    await nav.get_by_role("link", name="Workers").click()
    workers = page.get_by_role("table", name="Workers")
    labelled = workers.get_by_role("list", name="Labels of gpu-a")
    await expect(labelled.get_by_role("listitem")).to_have_text(["gpu=h100", "zone=eu"])
    await expect(workers.get_by_role("list", name="Labels of gpu-b")).to_have_count(0)
    await page.get_by_role("link", name="gpu-a").click()
    await expect(
        page.locator(".facts").get_by_role("list", name="Labels of gpu-a")
    ).to_contain_text("zone=eu")
    await shot(page, "23-worker-labels")
    # The instance's worker lists its container with the instance's short id.
    [instance] = (await stored(ctl, deployment_id))["instances"]
    await page.goto(f"{ctl.url}/#/workers/{instance['worker_id']}")
    containers = page.get_by_role("table", name="Containers")
    await expect(containers).to_contain_text(instance["id"][:8])

    # -- a viewer sees the instances but no control that changes them
    status, _ = await ctl.admin(
        "POST", "/api/users", json={"username": "viewer", "password": VIEWER_PASSWORD}
    )
    assert status == 201
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, ctl.url, "viewer", VIEWER_PASSWORD)
    await page.goto(f"{ctl.url}/#/deployments/{deployment_id}")
    await instance_rows(page, 1)
    for name in ("Stop", "Start", "Scale", "Roll out update", "Delete"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.get_by_role("form", name="Scale")).to_have_count(0)

    await context.close()
    assert errors == []
