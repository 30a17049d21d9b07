"""Results as data: trials and epoch rows as JSON, CSV and Parquet (streamed), and the
aggregated curves as JSON, checked against the paged JSON API and numpy on each backend."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.schemas import SweepEpochPublic
from service.store import export
from service.store.engine import session_scope
from service.tables import encode
from tests.service.test_api_results import EPOCHS, seed_sweep

FORMATS = ("csv", "parquet")


def read_table(response: Any, fmt: str) -> pd.DataFrame:
    """The body of a CSV or Parquet answer as a DataFrame."""
    assert response.status_code == 200, response.text
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        return pd.read_csv(io.BytesIO(response.content))
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    return pd.read_parquet(io.BytesIO(response.content))


@pytest.fixture
def seeded(client: TestClient) -> tuple[TestClient, int, list[dict[str, Any]]]:
    sweep_id, trials = seed_sweep(client, client.app.state.engine)  # type: ignore[attr-defined]
    return client, sweep_id, trials


@pytest.mark.parametrize("fmt", FORMATS)
def test_trials_export_equals_the_json_listing(seeded: Any, fmt: str) -> None:
    client, sweep_id, trials = seeded
    table = read_table(client.get(f"/sweeps/{sweep_id}/trials", params={"format": fmt}), fmt)
    assert list(table.columns) == [c.name for c in export.trial_columns()]
    assert table["id"].tolist() == [t["id"] for t in trials]  # every trial, not one page
    for column in ("status", "architecture", "algorithm", "seed"):
        assert table[column].tolist() == [t[column] for t in trials]
    runs = table["epochs_run"].astype("Int64").tolist()
    assert runs == [pd.NA if t["epochs_run"] is None else t["epochs_run"] for t in trials]
    expected = [np.nan if t["idempotent_error"] is None else t["idempotent_error"] for t in trials]
    np.testing.assert_array_equal(table["idempotent_error"].to_numpy(float), expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_trials_export_applies_the_filters(seeded: Any, fmt: str) -> None:
    client, sweep_id, trials = seeded
    params = {"format": fmt, "algorithm": "modified", "status": "succeeded"}
    table = read_table(client.get(f"/sweeps/{sweep_id}/trials", params=params), fmt)
    want = [t["id"] for t in trials if t["algorithm"] == "modified" and t["status"] == "succeeded"]
    assert table["id"].tolist() == want


def _epochs_via_json_api(client: TestClient, trials: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for t in trials:
        for e in client.get(f"/trials/{t['id']}/epochs").json()["data"]:
            rows.append({"trial_id": t["id"], **e})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", [*FORMATS, "json"])
def test_epochs_export_holds_every_row_of_the_sweep(seeded: Any, fmt: str) -> None:
    client, sweep_id, trials = seeded
    response = client.get(f"/sweeps/{sweep_id}/epochs", params={"format": fmt})
    if fmt == "json":
        body = response.json()
        assert body["sweep_id"] == sweep_id and body["count"] == len(body["data"])
        table = pd.DataFrame(body["data"])
    else:
        table = read_table(response, fmt)
    assert list(table.columns) == list(SweepEpochPublic.model_fields)
    assert [c.name for c in export.epoch_columns()] == list(SweepEpochPublic.model_fields)
    finished = [t for t in trials if t["status"] != "pending"]
    assert len(table) == EPOCHS * len(finished)
    expected = _epochs_via_json_api(client, finished)
    pd.testing.assert_frame_equal(
        table[expected.columns].reset_index(drop=True), expected, check_dtype=False
    )
    config = {t["id"]: t for t in trials}
    assert (table["algorithm"] == table["trial_id"].map(lambda i: config[i]["algorithm"])).all()


def test_epochs_of_a_sweep_with_reused_trials_are_the_runs_they_took_over(seeded: Any) -> None:
    client, sweep_id, _ = seeded
    from tests.service.test_api_results import SEEDED_SPEC

    again = client.post("/sweeps", json={**SEEDED_SPEC, "name": "again"}).json()
    assert again["reused_trials"] > 0
    first = read_table(client.get(f"/sweeps/{sweep_id}/epochs", params={"format": "csv"}), "csv")
    second = read_table(
        client.get(f"/sweeps/{again['id']}/epochs", params={"format": "csv"}), "csv"
    )
    reused = client.get(f"/sweeps/{again['id']}/trials", params={"limit": 1000}).json()["data"]
    origin = {t["id"]: t["reused_from"] for t in reused if t["reused_from"] is not None}
    assert len(second) == EPOCHS * len(origin)
    mapped = second.assign(trial_id=second["trial_id"].map(origin))
    keep = first[first["trial_id"].isin(origin.values())].reset_index(drop=True)
    mapped = mapped.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mapped, keep)


def test_epochs_export_filters_and_refuses_bad_requests(seeded: Any) -> None:
    client, sweep_id, trials = seeded
    got = client.get(f"/sweeps/{sweep_id}/epochs", params={"seed": 2, "architecture": "B1"})
    ids = {t["id"] for t in trials if t["seed"] == 2 and t["architecture"] == "B1"}
    assert {r["trial_id"] for r in got.json()["data"]} == ids - {trials[0]["id"]}
    assert client.get("/sweeps/999999/epochs", params={"format": "csv"}).status_code == 404
    assert client.get("/sweeps/999999/trials", params={"format": "parquet"}).status_code == 404
    bad = client.get(f"/sweeps/{sweep_id}/epochs", params={"format": "xlsx"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]
    bad = client.get(f"/sweeps/{sweep_id}/epochs", params={"status": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]


def test_small_batches_stream_as_many_row_groups_with_the_same_rows(seeded: Any) -> None:
    """The store yields several batches (yield_per) and Parquet writes one row group per
    batch; the decoded table equals the one-batch encoding."""
    client, sweep_id, _ = seeded
    engine = client.app.state.engine  # type: ignore[attr-defined]
    columns = export.epoch_columns()
    with session_scope(engine, readonly=True) as s:
        batches = list(export.EPOCHS.stream(s, sweep_id, batch_rows=7))
    assert len(batches) > 5 and all(len(b) <= 7 for b in batches)
    small = b"".join(encode("parquet", columns, batches))
    with session_scope(engine, readonly=True) as s:
        whole = b"".join(encode("parquet", columns, export.EPOCHS.stream(s, sweep_id)))
    assert pq.ParquetFile(io.BytesIO(small)).num_row_groups == len(batches)
    assert pq.read_table(io.BytesIO(small)).equals(pq.read_table(io.BytesIO(whole)))
    csv_small = b"".join(encode("csv", columns, batches))
    assert pd.read_csv(io.BytesIO(csv_small)).equals(pq.read_table(io.BytesIO(whole)).to_pandas())


def test_curves_json_is_the_mean_and_std_per_group_and_epoch(seeded: Any) -> None:
    client, sweep_id, _ = seeded
    by = "architecture,algorithm"
    body = client.get(f"/sweeps/{sweep_id}/curves", params={"by": by, "stride": 2}).json()
    assert body["by"] == ["architecture", "algorithm"] and body["stride"] == 2
    epochs = pd.DataFrame(
        client.get(f"/sweeps/{sweep_id}/epochs", params={"status": "succeeded"}).json()["data"]
    )
    groups = epochs.groupby(["architecture", "algorithm", "epoch"])["idempotent_error"]
    assert body["count"] == 4
    for curve in body["data"]:
        assert curve["epoch"] == list(range(1, EPOCHS + 1, 2))
        g = curve["group"]
        for i, e in enumerate(curve["epoch"]):
            values = groups.get_group((g["architecture"], g["algorithm"], e)).to_numpy()
            assert curve["n"][i] == len(values)
            np.testing.assert_allclose(curve["mean"][i], values.mean(), rtol=1e-9)
            np.testing.assert_allclose(curve["std"][i], values.std(ddof=1), rtol=1e-6)
    bad = client.get(f"/sweeps/{sweep_id}/curves", params={"metric": "epochs_run"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "metric"]


def test_the_filters_are_the_stores_trial_fields() -> None:
    import inspect

    from service.routes.exports import trial_filters
    from service.store.query_fields import TRIAL_FIELDS

    assert list(inspect.signature(trial_filters).parameters) == ["status", *TRIAL_FIELDS]
