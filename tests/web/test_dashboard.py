"""The dashboard end to end in headless Chromium (``tests.web.browsing``).

One real stack: the controller, an agent session with the in-memory runtime and
two (fake-NVML) GPUs, and the stand-in engine process listening on the one port
the controller may hand out, so a deployment created in the browser runs and
answers the playground. Playwright's async API shares the test's event loop
with the in-process controller. Screenshots of every main page are written to
``tests/artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Route, expect

from agent.gpu import GpuStats
from controller.fleet.hub import GPU_PUSH_SECONDS
from tests.agent.controller_stub import FakeGpuReader
from tests.clock import ManualClock
from tests.conftest import Controller
from tests.dockerutil import free_port
from tests.fleetutil import RunningAgent, run_agent
from tests.gateway.conftest import Engine, start_engine
from tests.runtime.memory_runtime import MemoryRuntime
from tests.web.browsing import narrate, shot, sign_in

MODEL = "tiny-chat"
VIEWER_PASSWORD = "viewer-password-1"

# Records each JSON body the page reads, in a task queued once the body is read,
# so every await chained on that read (the page's own code) has run by then.
MARK_JSON_READS = """() => {
    window.__jsonRead = [];
    const json = Response.prototype.json;
    Response.prototype.json = function () {
        const url = this.url;
        return json.call(this).finally(() => setTimeout(() => window.__jsonRead.push(url)));
    };
}"""

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=10_000)


class BeatingGpus(FakeGpuReader):
    """Each reading (one per heartbeat) moves the controller's clock on by
    ``GPU_PUSH_SECONDS``: every heartbeat reaches the page as a chart point,
    and a worker whose agent keeps beating never looks silent."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock

    def stats(self) -> list[GpuStats]:
        self._clock.advance(GPU_PUSH_SECONDS)
        return super().stats()


@dataclass
class Stack:
    ctl: Controller
    agent: RunningAgent
    runtime: MemoryRuntime
    engine: Engine


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    ctl = Controller(
        data_dir=tmp_path / "data",
        # Liveness allows 3 beats, each a push interval (BeatingGpus).
        overrides={"engine_port_min": port, "engine_port_max": port, "heartbeat_interval": 1.0},
    )
    await ctl.start()
    engine = await start_engine(port, MODEL, STANDIN_TOKEN_DELAY="0.05")
    runtime = MemoryRuntime()
    try:
        async with run_agent(
            ctl, runtime, tmp_path / "agent", gpus=BeatingGpus(ctl.clock)
        ) as agent:
            yield Stack(ctl, agent, runtime, engine)
    finally:
        await engine.stop()
        await ctl.close()


async def test_the_dashboard_end_to_end(stack: Stack, browser: Browser) -> None:
    ctl = stack.ctl
    status, _ = await ctl.admin(
        "POST", "/api/users", json={"username": "viewer", "password": VIEWER_PASSWORD}
    )
    assert status == 201
    context = await browser.new_context(viewport={"width": 1366, "height": 800})
    page = narrate(await context.new_page())
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # -- sign in; the overview shows the worker and its GPUs live
    await page.goto(ctl.url + "/")
    await expect(page).to_have_url(ctl.url + "/#/login")
    await shot(page, "01-sign-in")
    await sign_in(page, ctl.url, "admin", "admin-password-1")
    await expect(page.locator("[data-testid=workers-online]")).to_have_text("1")
    gpu = page.locator(".gpu").first
    await expect(gpu.get_by_role("meter", name="Utilization")).to_have_attribute(
        "aria-valuenow", "42"
    )
    await shot(page, "02-overview")
    nav = page.get_by_role("navigation", name="Main")

    # -- create a deployment: first the API's validation message, then for real
    await nav.get_by_role("link", name="Deployments").click()
    await page.get_by_role("link", name="New deployment").click()
    await page.get_by_label("Name").fill("Not A Valid Name!")
    await page.get_by_label("Model", exact=True).fill("stand-in/tiny")
    await page.get_by_role("button", name="Create deployment").click()
    name_error = page.locator('.field[data-field="name"] .field-error')
    await expect(name_error).not_to_be_empty()
    await expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    await shot(page, "03-deployment-form-validation")
    await page.get_by_label("Name").fill(MODEL)
    await page.evaluate("window.__sameDocument = true")
    await page.get_by_role("button", name="Create deployment").click()

    # -- its detail: the status reaches running without a reload, logs arrive
    await expect(page.get_by_role("heading", name=MODEL)).to_be_visible()
    await expect(page.locator(".facts .status-cell .badge")).to_have_text("running")
    assert await page.evaluate("window.__sameDocument === true")
    logs = page.get_by_label("Engine log")
    await expect(logs).to_contain_text("engine vllm serving stand-in/tiny")
    deployment_id = page.url.rsplit("/", 1)[1]
    stack.runtime.append_log(deployment_id, "INFO 200 OK /v1/chat/completions")
    await expect(logs).to_contain_text("INFO 200 OK /v1/chat/completions")
    await shot(page, "04-deployment-detail")
    await nav.get_by_role("link", name="Deployments").click()
    await expect(page.get_by_role("table", name="Deployments")).to_contain_text(MODEL)
    await shot(page, "05-deployments")

    # -- the playground streams the reply as it is generated
    await nav.get_by_role("link", name="Playground").click()
    await expect(page.get_by_label("Deployment", exact=True)).to_have_value(MODEL)
    await page.get_by_label("Message").fill("Say something")
    await page.get_by_role("button", name="Send").click()
    partial = page.locator(".msg.assistant p.streaming")
    await expect(partial).not_to_be_empty()  # text while the stream is still open
    streamed = await partial.inner_text()
    reply = page.locator(".msg.assistant p").first
    await expect(reply).not_to_have_class("streaming", timeout=15_000)
    final = await reply.inner_text()
    assert len(final.split()) == 16, final
    assert len(streamed.split()) < 16 and final.startswith(streamed.strip())
    await shot(page, "06-playground")

    # -- API keys: created (shown once, copyable), listed, deleted
    await nav.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name").fill("ci-key")
    await page.get_by_role("button", name="Create key").click()
    key_box = page.get_by_role("textbox", name="New API key")
    await expect(key_box).to_have_value(re.compile(r"^lmsk_[A-Za-z0-9_-]{20,}$"))
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    keys_table = page.get_by_role("table", name="API keys")
    await expect(keys_table).to_contain_text("ci-key")
    # Its limits: a bad value is named in the dialog, good ones show with a quota bar.
    await page.get_by_role("button", name="Edit limits of key ci-key").click()
    limits = page.get_by_role("dialog", name="Limits of key ci-key")
    await limits.get_by_label("Requests per minute").fill("0")
    await limits.get_by_role("button", name="Save limits").click()
    await expect(limits.get_by_role("alert")).to_contain_text("rpm")
    await limits.get_by_label("Requests per minute").fill("60")
    await limits.get_by_label("Token budget").fill("5000")
    await limits.get_by_label("Budget period").select_option("day")
    await limits.get_by_role("button", name="Save limits").click()
    await expect(limits).to_have_count(0)
    await expect(keys_table).to_contain_text("60 rpm · 5000 tokens/day")
    quota = keys_table.get_by_role("progressbar", name="Token budget of ci-key")
    await expect(quota).to_have_attribute("aria-valuemax", "5000")
    await expect(keys_table).to_contain_text("5000 left this day")
    _, ci_keys = await ctl.admin("GET", "/api/api-keys")
    [ci_key] = ci_keys["items"]
    assert ci_key["limits"] == {
        "rpm": 60, "tpm": None, "max_parallel": None, "token_budget": 5000, "budget_period": "day"
    }  # fmt: skip
    await shot(page, "07-api-keys")
    await page.get_by_role("button", name="Delete key ci-key").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(keys_table).not_to_contain_text("ci-key")
    status, listing = await ctl.admin("GET", "/api/api-keys")
    assert [k["name"] for k in listing["items"]] == []

    # -- workers (live GPU charts), users, usage
    await nav.get_by_role("link", name="Workers").click()
    await page.get_by_role("link", name="gpu-worker-01").click()
    utilization = page.get_by_role("img", name="Utilization (%)")
    # Heartbeats keep arriving: the line gains points without a reload.
    await expect(utilization.locator("polyline").first).to_have_attribute(
        "points", re.compile(r"^\S+ \S+ \S+")
    )
    await expect(page.get_by_role("table", name="Containers")).to_contain_text(f"lmstack-{MODEL}")
    await shot(page, "08-worker")
    await nav.get_by_role("link", name="Users").click()
    users_table = page.get_by_role("table", name="Users")
    await expect(users_table).to_contain_text("viewer")
    await page.get_by_role("button", name="Edit limits of user viewer").click()
    user_limits = page.get_by_role("dialog", name="Limits of user viewer")
    await user_limits.get_by_label("Parallel requests").fill("3")
    await user_limits.get_by_role("button", name="Save limits").click()
    await expect(users_table).to_contain_text("3 parallel")
    _, users = await ctl.admin("GET", "/api/users")
    assert [u["limits"]["max_parallel"] for u in users["items"] if u["username"] == "viewer"] == [3]
    await shot(page, "09-users")
    await nav.get_by_role("link", name="Usage").click()
    await expect(page.get_by_role("img", name="Tokens per day")).to_be_visible()
    totals = page.get_by_role("table", name="Usage totals")
    await expect(totals).to_contain_text(MODEL)
    await shot(page, "10-usage")
    # Between two dates: nothing from tomorrow on, today's traffic again from today.
    today = datetime.now(UTC).date()
    await page.get_by_label("From", exact=True).fill((today + timedelta(days=1)).isoformat())
    await expect(page.get_by_text("No gateway traffic recorded yet.")).to_be_visible()
    await expect(totals).not_to_contain_text(MODEL)
    await page.get_by_label("From", exact=True).fill(today.isoformat())
    await page.get_by_label("To", exact=True).fill(today.isoformat())
    await expect(totals).to_contain_text(MODEL)
    await page.get_by_label("To", exact=True).fill((today - timedelta(days=1)).isoformat())
    await expect(page.get_by_role("alert")).to_be_visible()  # the API refuses end < start

    # -- a phone-sized overview stays readable
    phone = await browser.new_page(viewport={"width": 390, "height": 844})
    await phone.goto(ctl.url + "/")
    await sign_in(phone, ctl.url, "admin", "admin-password-1")
    await shot(phone, "11-overview-phone")
    await phone.close()

    # -- a non-admin sees no admin controls, and the server refuses them anyway
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, ctl.url, "viewer", VIEWER_PASSWORD)
    await expect(nav.get_by_role("link", name="Deployments")).to_be_visible()
    await expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    await nav.get_by_role("link", name="Deployments").click()
    await expect(page.get_by_role("table", name="Deployments")).to_contain_text(MODEL)
    await expect(page.get_by_role("link", name="New deployment")).to_have_count(0)
    await page.get_by_role("link", name=MODEL).click()
    await expect(page.get_by_label("Engine log")).to_contain_text("serving stand-in/tiny")
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await shot(page, "12-deployment-as-viewer")
    refused = await page.evaluate(
        """async (id) => {
            const token = sessionStorage.getItem("lmstack.token");
            const headers = {Authorization: `Bearer ${token}`};
            return (await fetch(`/api/deployments/${id}`, {method: "DELETE", headers})).status;
        }""",
        deployment_id,
    )
    assert refused == 403
    await page.goto(ctl.url + "/#/users")
    await expect(page.get_by_role("alert")).to_contain_text("Only admins")

    await context.close()
    assert errors == []


async def test_a_page_left_while_loading_never_covers_the_next(
    stack: Stack, browser: Browser
) -> None:
    context = await browser.new_context(viewport={"width": 1366, "height": 800})
    page = narrate(await context.new_page())
    await sign_in(page, stack.ctl.url, "admin", "admin-password-1")
    await expect(page.locator("[data-testid=workers-online]")).to_have_text("1")

    release = asyncio.Event()

    async def held(route: Route) -> None:
        await release.wait()
        await route.continue_()

    # The Deployments page starts by loading the workers: hold that answer back
    # until the user has moved on.
    await page.route("**/api/workers", held)
    await page.evaluate(MARK_JSON_READS)
    nav = page.get_by_role("navigation", name="Main")
    await nav.get_by_role("link", name="Deployments").click()
    await nav.get_by_role("link", name="Playground").click()
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    release.set()
    # With its answer the left page loads its list; wait until it has used that.
    await page.wait_for_function(
        "() => window.__jsonRead.some((url) => url.endsWith('/api/deployments?limit=1000'))"
    )
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    await expect(page.get_by_role("table", name="Deployments")).to_have_count(0)
    await context.close()
