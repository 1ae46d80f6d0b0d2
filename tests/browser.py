"""Headless Chromium from the distribution's packages, driven by playwright (the test extra); playwright's
own browser downloads are never used. Tests that need it skip with the reason when it is missing.

Launch flags: headless, no sandbox (CI runs as root), no GPU, and no background traffic (updates, sync,
component downloads, QUIC), in a new empty profile.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

BROWSER_ENV = "BITNET_HARNESS_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """$BITNET_HARNESS_CHROMIUM, else the first Chromium or Chrome on PATH."""
    if os.environ.get(BROWSER_ENV):
        return os.environ[BROWSER_ENV]
    return next((found for name in _NAMES if (found := shutil.which(name))), None)


@dataclass
class PageLog:
    """What a page did while loading: console messages by type, uncaught errors, every URL requested."""

    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"] + self.page_errors


@contextmanager
def open_page(url: str, width: int = 1200, height: int = 900) -> Iterator[tuple[Any, PageLog]]:
    """The loaded page and its log; skips the test when playwright or a Chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (test extra)")
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            f"no Chromium found (apt-get install chromium, or set {BROWSER_ENV}); .ci/run installs it"
        )
    log = PageLog()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, args=FLAGS, viewport={"width": width, "height": height}
        )
        try:
            page = context.new_page()
            page.on("console", lambda msg: log.console.append((msg.type, msg.text)))
            page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
            page.on("request", lambda request: log.requests.append(request.url))
            page.goto(url, wait_until="load")
            yield page, log
        finally:
            context.close()
