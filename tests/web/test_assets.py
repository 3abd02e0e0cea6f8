"""``/`` and ``/static``: the page, versioned immutable assets, no outside origin."""

from __future__ import annotations

import re

from tests.conftest import Controller


async def fetch(ctl: Controller, path: str) -> tuple[int, dict[str, str], bytes]:
    assert ctl.http is not None
    async with ctl.http.get(ctl.url + path) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_index_is_never_cached_and_links_versioned_assets(controller: Controller) -> None:
    status, headers, body = await fetch(controller, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href)="(/static/[^"]+)"', body.decode())
    assert links and all(re.match(r"^/static/[0-9a-f]{12}/", link) for link in links)
    # Nothing from another origin: the dashboard works air-gapped.
    assert "http://" not in body.decode() and "https://" not in body.decode()

    for link in links:
        status, headers, _ = await fetch(controller, link)
        assert status == 200, link
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_modules_are_served_as_javascript(controller: Controller) -> None:
    _, _, body = await fetch(controller, "/")
    version = re.search(r"/static/([0-9a-f]{12})/", body.decode())
    assert version is not None
    status, headers, module = await fetch(controller, f"/static/{version[1]}/js/pages/keys.js")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert b"export async function render" in module


async def test_an_old_version_is_served_uncached_and_unknown_files_are_404(
    controller: Controller,
) -> None:
    status, headers, _ = await fetch(controller, "/static/000000000000/app.css")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    for path in ("/static/000000000000/nope.js", "/static/000000000000/../auth.py"):
        status, _, body = await fetch(controller, path)
        assert status == 404, path
        assert b"def " not in body
