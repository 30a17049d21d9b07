"""The sweeps page and the API docs (/docs, /redoc) in a real headless Chromium against a
running `idem api`: they render, and no request leaves 127.0.0.1 (every request is
intercepted; one for another host is recorded and refused)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.conftest import CHROMIUM, BrowserErrors, RunningApi

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (scripts/setup.sh --test)"),
]


@pytest.fixture
def outside(page: Page) -> Iterator[list[str]]:
    """URLs the page asked for on any host but 127.0.0.1 (each refused)."""
    seen: list[str] = []

    def check(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            seen.append(url)
            route.abort()

    page.route("**/*", check)
    yield seen


def test_sweeps_page_lists_the_sweep_with_its_links(
    running_api: RunningApi, page: Page, browser_errors: BrowserErrors, outside: list[str]
) -> None:
    response = page.goto(f"{running_api.url}/", wait_until="load", timeout=60_000)
    assert response is not None and response.status == 200
    expect(page.locator("h1")).to_have_text("Sweeps")
    row = page.locator(f"#sweep-{running_api.sweep_id}")
    expect(row).to_contain_text("e2e")
    expect(row).to_contain_text("succeeded")
    expect(row.locator("progress")).to_have_attribute("value", "1.0")
    page.get_by_role("link", name="report").first.click()
    expect(page).to_have_url(f"{running_api.url}/sweeps/{running_api.sweep_id}/report")
    assert outside == [] and browser_errors.messages == []


def test_swagger_ui_renders_offline(
    running_api: RunningApi, page: Page, browser_errors: BrowserErrors, outside: list[str]
) -> None:
    page.goto(f"{running_api.url}/docs", wait_until="networkidle", timeout=60_000)
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("idemsweep")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
    assert outside == [] and browser_errors.messages == []


def test_redoc_renders_offline(
    running_api: RunningApi, page: Page, browser_errors: BrowserErrors, outside: list[str]
) -> None:
    page.goto(f"{running_api.url}/redoc", wait_until="networkidle", timeout=60_000)
    expect(page.locator("h1").first).to_contain_text("idemsweep")
    expect(page.get_by_text("/sweeps/{sweep_id}/epochs").first).to_be_attached()
    # ReDoc's bundle asks for its logo on cdn.redoc.ly; the page's CSP refuses it before
    # any request is made (so `outside` stays empty); Chromium may report that refusal.
    assert outside == []
    for message in browser_errors.messages:
        assert "cdn.redoc.ly/redoc/logo-mini.svg" in message, message
        assert "Content Security Policy" in message or message.endswith(" csp"), message
