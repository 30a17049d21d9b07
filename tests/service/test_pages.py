"""The sweeps page (GET /) and the offline API docs, as HTML from the real app."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.service.conftest import SMALL_SPEC


def test_no_sweeps_says_how_to_submit(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "No sweeps yet" in page.text and 'http-equiv="refresh"' not in page.text


def test_sweeps_newest_first_with_links_escaped_and_refreshing_while_queued(
    client: TestClient,
) -> None:
    first = client.post("/sweeps", json={**SMALL_SPEC, "name": "<script>alert(1)</script>"})
    second = client.post("/sweeps", json={**SMALL_SPEC, "name": "second", "seeds": 3})
    a, b = first.json()["id"], second.json()["id"]
    page = client.get("/").text
    assert page.index(f'id="sweep-{b}"') < page.index(f'id="sweep-{a}"')  # newest first
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for link in (f'href="sweeps/{a}/report"', f'href="sweeps/{a}"'):
        assert link in page
    assert 'http-equiv="refresh" content="5"' in page  # queued sweeps: it refreshes
    row = re.search(rf'<tr id="sweep-{b}">(.*?)</tr>', page, re.S)
    assert row and "queued" in row.group(1) and ">6<" in row.group(1)  # 6 pending trials
    assert "2 sweeps, newest first" in page
    for sweep_id in (a, b):
        client.post(f"/sweeps/{sweep_id}/cancel")
    page = client.get("/").text
    assert 'http-equiv="refresh"' not in page and "cancelled" in page


def test_docs_pages_load_their_assets_from_this_server(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, html
        for asset in assets:
            assert asset.startswith("/"), f"{path} loads {asset} from elsewhere"
            assert client.get(asset).status_code == 200, asset
