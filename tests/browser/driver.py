"""Chromium for the browser tests (Playwright driving Debian's chromium): one browser per test module, a
fresh context (cookies) per test, the checks every admin page gets (styled, screenshot)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.env import UNDER_CI

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a-long-test-password-42"
# Django admin's header colour (--header-bg, light theme): what an unstyled page does not have.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not UNDER_CI, reason=f"needs Debian's chromium at {CHROMIUM}"
)


class Browser:
    """Chromium driven from its own thread: Playwright's sync API keeps an event loop on the thread that
    uses it, and Django refuses ORM calls on such a thread, so the test's ORM reads stay on this one."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._context = None
        self.page = None
        self.outside_requests: list[str] = []
        self._pool.submit(self._start).result()

    def _start(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        # Debian's chromium, never a downloaded browser; no sandbox because CI runs as root.
        self._browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )

    def fresh(self, *, offline: bool = False, timezone_id: str | None = None) -> None:
        """A new context (no cookies). `offline`: every request to a host other than 127.0.0.1 is
        aborted and recorded, as on a machine with no route to a CDN."""

        def start() -> None:
            if self._context is not None:
                self._context.close()
            self.outside_requests = []
            self._context = self._browser.new_context(
                viewport={"width": 1280, "height": 860}, timezone_id=timezone_id
            )
            if offline:
                self._context.route("**/*", self._local_only)
            self.page = self._context.new_page()
            self.page.set_default_timeout(15_000)

        self._pool.submit(start).result()

    def _local_only(self, route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside_requests.append(url)
            route.abort()

    def __call__(self, step: Callable[[Any], Any]) -> Any:
        return self._pool.submit(step, self.page).result()

    def close(self) -> None:
        def stop() -> None:
            if self._context is not None:
                self._context.close()
            self._browser.close()
            self._playwright.stop()

        self._pool.submit(stop).result()
        self._pool.shutdown()


def sign_in(base: str, email: str, then: str = "/admin/") -> Callable[[Any], None]:
    def step(page) -> None:
        page.goto(f"{base}/admin/login/?next={then}")
        page.fill("#id_username", email)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"**{then}")

    return step


def styled(page) -> dict[str, Any]:
    """What shows the page is styled: admin's stylesheet loaded (with its rules readable) and applied."""
    return page.evaluate(
        """() => {
          const sheets = [...document.styleSheets]
            .filter(s => s.href && s.href.includes('/static/admin/css/'));
          const header = document.querySelector('#header');
          return {
            stylesheets: sheets.map(s => new URL(s.href).pathname.split('/').pop()),
            rules: sheets.reduce((n, s) => n + s.cssRules.length, 0),
            header: header ? getComputedStyle(header).backgroundColor : null,
          };
        }"""
    )


def assert_styled(page) -> None:
    seen = styled(page)
    # base.css by its hashed name (ServeStatic's manifest storage), with its rules, and the header coloured.
    assert any(name.startswith("base.") and name.endswith(".css") for name in seen["stylesheets"]), seen
    assert seen["rules"] > 100, seen
    assert seen["header"] == ADMIN_HEADER_BACKGROUND, seen


def screenshot(folder: Path, name: str) -> Callable[[Any], Path]:
    def step(page) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return step
