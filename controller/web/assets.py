"""The dashboard's files: ``/`` (the single page) and ``/static/<version>/<file>``.

Guarantees:
* Only files shipped in ``controller/web/static`` are served; they are read
  once when the application is created, so a request can never name a path
  outside that directory (there is no path to traverse: lookups are by name in
  a dict).
* ``<version>`` is a digest of every asset's content. ``index.html`` (never
  cached: ``no-cache``) links the assets under the current version, and those
  answers are cached for a year as ``immutable``: a new release changes the
  version, so browsers fetch it at once and never mix old and new modules
  (ES-module imports are relative, so they inherit the version). An asset
  asked for under another version is still served, with ``no-cache``.
* No external origin is referenced; the Content-Security-Policy allows only
  this origin, so the dashboard works in an air-gapped cluster.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from shared.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
VERSION_PLACEHOLDER = "__ASSET_VERSION__"
IMMUTABLE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


class Assets:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        self._files: dict[str, Asset] = {}
        index = b""
        for path in files:
            name = path.relative_to(directory).as_posix()
            body = path.read_bytes()
            digest.update(name.encode() + b"\0" + body)
            if name == "index.html":
                index = body
                continue
            guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._files[name] = Asset(body, _TYPES.get(path.suffix, guessed))
        self.version = digest.hexdigest()[:12]
        self.index = index.replace(VERSION_PLACEHOLDER.encode(), self.version.encode())

    def get(self, name: str) -> Asset | None:
        return self._files.get(name)


ASSETS = web.AppKey("web_assets", Assets)


async def index(request: web.Request) -> web.Response:
    assets = request.app[ASSETS]
    return web.Response(
        body=assets.index,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache", **SECURITY_HEADERS},
    )


async def static(request: web.Request) -> web.Response:
    assets = request.app[ASSETS]
    name = request.match_info["name"]
    asset = assets.get(name)
    if asset is None:
        raise NotFound(f"No such file: {name}")
    fresh = request.match_info["version"] == assets.version
    return web.Response(
        body=asset.body,
        content_type=asset.content_type,
        charset="utf-8" if asset.content_type.startswith("text/") else None,
        headers={"Cache-Control": IMMUTABLE if fresh else "no-cache", **SECURITY_HEADERS},
    )
