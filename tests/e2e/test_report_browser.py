"""The report page in a real headless Chromium, loaded from a running API."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.cdp import Browser
from tests.e2e.conftest import RunningApi

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (scripts/setup.sh --test)"),
]

IMAGES = """JSON.stringify(Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight, w: r.width, h: r.height};
}))"""


def test_report_renders_every_figure_without_console_errors(
    running_api: RunningApi, tmp_path: Path
) -> None:
    import json

    url = f"{running_api.url}/sweeps/{running_api.sweep_id}/report"
    response = httpx.get(url, timeout=120)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    expected_figures = response.text.count('src="data:image/png;base64,')
    assert expected_figures >= 5

    browser = Browser(tmp_path / "profile", binary=CHROMIUM or "chromium")
    try:
        browser.load(url)
        images = json.loads(browser.evaluate(IMAGES))
        title = browser.evaluate("document.title")
        warning = browser.evaluate("document.querySelector('.warn').innerText")
        errors = browser.errors()
        # the same probe does see errors: a console error and a failed image load
        browser.events.clear()
        browser.load(
            "data:text/html,<img src='http://127.0.0.1:9/missing.png'>"
            "<script>console.error('probe')</script>"
        )
        probe = browser.errors()
    finally:
        browser.close()
    assert f"sweep {running_api.sweep_id}" in title
    assert "null map is not a success" in warning
    assert len(images) == expected_figures
    for image in images:
        assert image["complete"]
        assert image["nw"] > 0 and image["nh"] > 0
        assert image["w"] > 0 and image["h"] > 0
    assert errors == []
    assert any("probe" in e for e in probe)


def test_unknown_sweep_report_is_404(running_api: RunningApi) -> None:
    response = httpx.get(f"{running_api.url}/sweeps/99999/report", timeout=30)
    assert response.status_code == 404
