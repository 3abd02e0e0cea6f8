"""The OpenAPI document is valid and describes exactly the routes that exist,
and real responses match the schemas it promises."""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import validate

from controller.web import is_web_route
from tests.conftest import Controller
from tests.scheduler.workers import raw_worker


async def fetch_doc(ctl: Controller) -> dict[str, Any]:
    status, doc = await ctl.admin("GET", "/api/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    return doc


async def test_document_is_valid_openapi(controller: Controller) -> None:
    validate(await fetch_doc(controller))


async def test_every_route_is_documented_and_nothing_else(controller: Controller) -> None:
    doc = await fetch_doc(controller)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in controller.app.router.routes()
        if r.method != "HEAD"
        and r.resource is not None
        # The web dashboard (page, files, WebSockets) is not part of the REST API.
        and not is_web_route(r.resource.canonical)
    }
    assert documented == served


def _check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, (path, method, status)
    content = responses[str(status)].get("content")
    if content is None:
        assert body is None
        return
    schema = {**content["application/json"]["schema"], "components": doc["components"]}
    # Resolve "#/components/..." refs against the document itself.
    jsonschema.validate(body, schema)


async def test_responses_match_their_schemas(controller: Controller) -> None:
    doc = await fetch_doc(controller)
    # Creating places the deployment, so a worker must be online for it.
    async with raw_worker(controller, "gpu-01"):
        status, created = await controller.admin(
            "POST",
            "/api/deployments",
            json={"name": "m", "model": "x", "config": {"dtype": "auto"}},
        )
    _check(doc, "/api/deployments", "post", status, created)
    calls: list[tuple[str, str, str, Any]] = [
        ("GET", "/api/deployments", "/api/deployments", None),
        ("GET", f"/api/deployments/{created['id']}", "/api/deployments/{deployment_id}", None),
        ("GET", "/api/deployments?limit=0", "/api/deployments", None),
        ("GET", "/api/workers", "/api/workers", None),
        ("GET", "/api/users", "/api/users", None),
        ("POST", "/api/users", "/api/users", {"username": "u", "password": "password-u"}),
        ("POST", "/api/users", "/api/users", {"username": "u"}),
        ("POST", "/api/api-keys", "/api/api-keys", {"name": "k"}),
        ("GET", "/api/api-keys", "/api/api-keys", None),
        ("GET", "/api/auth/me", "/api/auth/me", None),
        ("GET", "/health", "/health", None),
        ("DELETE", f"/api/deployments/{created['id']}", "/api/deployments/{deployment_id}", None),
    ]
    for method, url, template, body in calls:
        status, got = await controller.admin(method, url, json=body)
        _check(doc, template, method.lower(), status, got)
    status, got = await controller.call("GET", "/api/workers")
    _check(doc, "/api/workers", "get", status, got)


async def test_limits_and_budgets_match_their_schemas(controller: Controller) -> None:
    doc = await fetch_doc(controller)
    limits = {"rpm": 5, "token_budget": 100}
    status, key = await controller.admin(
        "POST", "/api/api-keys", json={"name": "k", "limits": limits}
    )
    _check(doc, "/api/api-keys", "post", status, key)
    _, me = await controller.admin("GET", "/api/auth/me")
    template = "/api/api-keys/{key_id}"
    calls: list[tuple[str, str, str, Any]] = [
        ("GET", f"/api/api-keys/{key['id']}", template, None),
        ("PATCH", f"/api/api-keys/{key['id']}", template, {"limits": {"tpm": 10}}),
        ("PATCH", f"/api/api-keys/{key['id']}", template, {"limits": {"rpm": 0}}),
        ("PATCH", f"/api/users/{me['id']}", "/api/users/{user_id}", {"limits": limits}),
        ("GET", "/api/usage", "/api/usage", None),
        ("GET", "/api/auth/me", "/api/auth/me", None),
    ]
    for method, url, path, body in calls:
        status, got = await controller.admin(method, url, json=body)
        _check(doc, path, method.lower(), status, got)
