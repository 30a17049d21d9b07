"""The report page in a real headless Chromium (Debian's, driven by Playwright), loaded
from a running `idem api`."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import CHROMIUM, BrowserErrors, RunningApi

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (scripts/setup.sh --test)"),
]

# Each <img>: loaded, with pixels, laid out at a visible size, with a text alternative.
IMAGES = """() => Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight,
          w: r.width, h: r.height, alt: i.alt};
})"""


def test_report_renders_every_figure_without_console_errors(
    running_api: RunningApi, page: Page, browser_errors: BrowserErrors
) -> None:
    url = f"{running_api.url}/sweeps/{running_api.sweep_id}/report"
    html = httpx.get(url, timeout=120).text
    expected_figures = html.count('src="data:image/png;base64,')
    assert expected_figures >= 5

    response = page.goto(url, wait_until="load", timeout=120_000)
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    expect(page).to_have_title(re.compile(rf"\bsweep {running_api.sweep_id}\b"))
    expect(page.locator("h1")).to_contain_text(f"Sweep {running_api.sweep_id}")
    expect(page.locator(".warn")).to_contain_text("null map is not a success")
    expect(page.locator("img")).to_have_count(expected_figures)
    images = page.evaluate(IMAGES)
    assert len(images) == expected_figures
    for image in images:
        assert image["complete"], image
        assert image["nw"] > 0 and image["nh"] > 0, image
        assert image["w"] > 0 and image["h"] > 0, image
        assert image["alt"].strip(), image
    assert browser_errors.messages == []


def test_the_error_probe_sees_errors(page: Page, browser_errors: BrowserErrors) -> None:
    """The collector the report test relies on does catch a console error, an uncaught
    exception and a failed image load (so its empty list above means something)."""
    page.set_content(
        "<img src='http://127.0.0.1:9/missing.png'>"
        "<script>console.error('probe'); setTimeout(() => { throw new Error('boom'); })</script>"
    )
    page.wait_for_timeout(500)
    text = "\n".join(browser_errors.messages)
    assert "probe" in text and "boom" in text and "missing.png" in text, text


def test_unknown_sweep_report_is_404(running_api: RunningApi) -> None:
    response = httpx.get(f"{running_api.url}/sweeps/99999/report", timeout=30)
    assert response.status_code == 404
