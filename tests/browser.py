"""Headless Chromium (Debian's) for the browser tests, driven by Playwright, and where
their screenshots go: `$DUROOT_SCREENSHOTS`, else `screenshots/` in pytest's temporary
directory (kept for the last runs). Import the fixtures into a test module to use them."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, sync_playwright

from duroot_stream.client.scan import FOLLOW_FETCH_WAIT_MS, FOLLOW_WAIT_S
from duroot_stream.web.live import RETRY_S

VIEWPORT: ViewportSize = {"width": 1100, "height": 900}
ACTION_MS = 15_000  # a page's clicks, loads and fetches (Playwright's default: 30 s)


def _refresh_ms() -> int:
    """How long a live page waits after an event before it fetches itself again."""
    app = files("duroot_stream.web").joinpath("static/app.js").read_text()
    found = re.search(r"const REFRESH_MS = (\d+);", app)
    assert found is not None, "app.js no longer sets REFRESH_MS"
    return int(found.group(1))


# What a live page may take to show what the pipeline has committed: the view's
# follower polls the events topic (its poll and fetch wait) or, after an outage,
# retries; the page then waits REFRESH_MS and fetches its own <main> (an action).
# Playwright's `expect` waits 5 s unless told: each live expectation passes this.
LIVE_MS = round(1000 * (FOLLOW_WAIT_S + RETRY_S) + FOLLOW_FETCH_WAIT_MS + _refresh_ms() + ACTION_MS)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs it (scripts/system-deps.sh)")
    return found


class _Shared:
    """One Playwright and one Chromium for the whole session: a fixture imported into
    several modules is set up once per module, and Playwright's sync API runs once."""

    users = 0
    playwright: Playwright | None = None
    chromium: Browser | None = None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if _Shared.chromium is None:
        _Shared.playwright = sync_playwright().start()
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        _Shared.chromium = _Shared.playwright.chromium.launch(
            executable_path=chromium_binary(), args=["--no-sandbox", "--disable-gpu"]
        )
    _Shared.users += 1
    try:
        yield _Shared.chromium
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.playwright is not None:
            _Shared.chromium.close()
            _Shared.playwright.stop()
            _Shared.chromium = _Shared.playwright = None


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    one = context.new_page()
    one.set_default_timeout(ACTION_MS)
    try:
        yield one
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DUROOT_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
