"""Where the controller URL and the token come from.

The config file is ``$XDG_CONFIG_HOME/lmstack/config.json`` (default
``~/.config/lmstack/config.json``), written with mode 0600 by ``lmstack login``.
It holds one controller URL, the token issued for it and the user name.

Precedence, highest first:

* URL: ``--controller``, ``LMSTACK_URL``, the config file, ``http://127.0.0.1:8088``.
* Token: ``LMSTACK_TOKEN`` (a login token or an ``lmsk_`` API key), then the
  config file's token, but only when the URL in use is the one it was issued
  for, so a token never travels to another controller.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cli._errors import CliError, UsageError

DEFAULT_URL = "http://127.0.0.1:8088"


@dataclass(frozen=True)
class StoredLogin:
    url: str = ""
    token: str = ""
    username: str = ""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lmstack" / "config.json"


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"controller URL must be http:// or https://, not {url!r}")
    return url


def load() -> StoredLogin:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return StoredLogin()
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object")
    return StoredLogin(
        url=str(data.get("url", "")),
        token=str(data.get("token", "")),
        username=str(data.get("username", "")),
    )


def save(login: StoredLogin) -> Path:
    """Write the config file atomically, readable by its owner only."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = json.dumps(
        {"url": login.url, "token": login.token, "username": login.username}, indent=2
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(payload + "\n")
    tmp.chmod(0o600)  # O_CREAT's mode does not apply to an existing file
    tmp.replace(path)
    return path


def effective_url(flag: str | None) -> str:
    return normalise_url(flag or os.environ.get("LMSTACK_URL") or load().url or DEFAULT_URL)


def effective_token(url: str) -> str:
    env = os.environ.get("LMSTACK_TOKEN", "").strip()
    if env:
        return env
    stored = load()
    return stored.token if stored.url == url else ""
