"""What the dashboard's browser tests share: Debian's headless Chromium (driven by
Playwright), a page that narrates what it says and fetches, screenshots, sign-in.

Screenshots go to ``tests/artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright, expect

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
ADMIN_PASSWORD = "admin-password-1"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def ensure_chromium() -> str:
    """Debian's chromium, installed by scripts/ensure-browser.sh when missing."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-browser.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def launch(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


def narrate(page: Page) -> Page:
    """Print what the page says and fetches: pytest shows it with a failure,
    so a page that never rendered says why (console errors, refused calls)."""
    page.on("console", lambda m: print(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: print(f"page error: {e}"))
    page.on("requestfailed", lambda r: print(f"failed: {r.method} {r.url} {r.failure}"))
    page.on("response", lambda r: print(f"{r.status} {r.request.method} {r.url}"))
    return page


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, url: str, username: str, password: str) -> None:
    await page.goto(url + "/")
    await expect(page.get_by_role("heading", name="Sign in to LMStack")).to_be_visible()
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password").press("Enter")  # keyboard, not a click
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
