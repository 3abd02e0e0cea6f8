"""``GET /metrics``: access, format, and the HTTP request counters."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import Controller
from tests.metrics.scrape import scrape

DEPLOYMENT = "/api/deployments/{deployment_id}"


async def test_metrics_need_a_bearer_token(controller: Controller) -> None:
    status, body = await controller.call("GET", "/metrics")
    assert status == 401, body
    status, body = await controller.call("GET", "/metrics", token="lmsk_wrong")
    assert status == 401, body
    # Any signed-in user may read them, not only admins.
    await controller.admin(
        "POST", "/api/users", json={"username": "watcher", "password": "password-w"}
    )
    token = await controller.login("watcher", "password-w")
    got = await scrape(controller, token)
    assert got.value("lmstack_workers", status="online") == 0


async def test_metrics_public_setting_serves_them_without_a_token(
    tmp_path: Path, database_url: str
) -> None:
    ctl = Controller(
        data_dir=tmp_path / "data", overrides={"metrics_public": True}, database_url=database_url
    )
    await ctl.start()
    try:
        assert ctl.http is not None
        async with ctl.http.get(ctl.url + "/metrics") as resp:
            assert resp.status == 200
            assert "lmstack_http_requests_total" in await resp.text()
        status, _ = await ctl.call("GET", "/api/openapi.json")
        assert status == 401  # only /metrics is opened
    finally:
        await ctl.close()


async def test_requests_are_counted_by_route_template(controller: Controller) -> None:
    before = await scrape(controller)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for deployment_id in ids:
        status, _ = await controller.admin("GET", f"/api/deployments/{deployment_id}")
        assert status == 404
    status, _ = await controller.admin("GET", "/no/such/route")
    assert status == 404
    status, _ = await controller.admin("GET", "/health")
    assert status == 200

    after = await scrape(controller)
    counted = "lmstack_http_requests_total"
    moved = after.value(counted, route=DEPLOYMENT, method="GET", status="404") - before.value(
        counted, route=DEPLOYMENT, method="GET", status="404"
    )
    assert moved == 3
    assert (
        after.value(counted, route="unmatched", method="GET", status="404")
        == before.value(counted, route="unmatched", method="GET", status="404") + 1
    )
    assert after.value(counted, route="/health", method="GET", status="200") >= 1
    latency = "lmstack_http_request_duration_seconds_count"
    assert (
        after.value(latency, route=DEPLOYMENT, method="GET")
        - before.value(latency, route=DEPLOYMENT, method="GET")
        == 3
    )
    # Templates only: no raw path (with its id) ever becomes a label.
    routes = after.label_values(counted, "route")
    assert not any(deployment_id in route for route in routes for deployment_id in ids)
    assert "/no/such/route" not in routes


async def test_failed_logins_count_as_401(controller: Controller) -> None:
    before = await scrape(controller)
    status, _ = await controller.call(
        "POST", "/api/auth/login", json={"username": "admin", "password": "wrong-password"}
    )
    assert status == 401
    after = await scrape(controller)
    labels = {"route": "/api/auth/login", "method": "POST", "status": "401"}
    assert (
        after.value("lmstack_http_requests_total", **labels)
        == before.value("lmstack_http_requests_total", **labels) + 1
    )


async def test_openapi_documents_metrics_as_text(controller: Controller) -> None:
    status, doc = await controller.admin("GET", "/api/openapi.json")
    assert status == 200
    operation = doc["paths"]["/metrics"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert "text/plain" in operation["responses"]["200"]["content"]
