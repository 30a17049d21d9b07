"""Submitting, reading and cancelling sweeps through the real app, on both databases."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from service.exceptions import SchemaNotCurrent
from service.settings import Settings
from tests.service.conftest import SMALL_SPEC


def with_(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SMALL_SPEC)
    body.update(changes)
    return body


def without(key: str) -> dict[str, Any]:
    body = copy.deepcopy(SMALL_SPEC)
    del body[key]
    return body


# (case, body, expected loc prefix, limit setting or None)
INVALID: list[tuple[str, Any, list[Any], str | None]] = [
    ("unknown architecture", with_(architectures=["N1", "Z9"]), ["body", "architectures", 1], None),
    ("unknown algorithm", with_(algorithms=["modified", "adam"]), ["body", "algorithms", 1], None),
    ("unknown init", with_(inits=["default", "xavier"]), ["body", "inits", 1], None),
    ("unknown data source", with_(data="mnist"), ["body", "data"], None),
    (
        "m1 on N2",
        with_(architectures=["N1", "N2"], algorithms=["m1"]),
        ["body", "algorithms", 0],
        None,
    ),
    (
        "batch over samples",
        with_(batches=[{"samples": 10, "batch_size": 20}]),
        ["body", "batches", 0],
        None,
    ),
    (
        "negative learning rate",
        with_(learning_rates=[-1.0]),
        ["body", "learning_rates", "list", 0],
        None,
    ),
    (
        "negative learning rate in a mapping",
        with_(learning_rates={"modified": [-1.0], "ordinary": [0.1]}),
        ["body", "learning_rates", "mapping", "modified", 0],
        None,
    ),
    (
        "learning-rate mapping without an algorithm's list",
        with_(learning_rates={"modified": [0.1]}),
        ["body", "learning_rates"],
        None,
    ),
    (
        "learning-rate mapping naming an algorithm not in the sweep",
        with_(learning_rates={"modified": [0.1], "ordinary": [0.1], "m1": [0.1]}),
        ["body", "learning_rates"],
        None,
    ),
    ("empty data list", with_(data=[]), ["body", "data"], None),
    ("unknown optimizer", with_(optimizers=["rmsprop"]), ["body", "optimizers", 0], None),
    ("duplicate optimizers", with_(optimizers=["sgd", "sgd"]), ["body", "optimizers"], None),
    ("zero epochs", with_(epochs=0), ["body", "epochs"], None),
    ("negative seed", with_(seeds=[-1]), ["body", "seeds"], None),
    ("zero seed count", with_(seeds=0), ["body", "seeds"], None),
    ("empty algorithms", with_(algorithms=[]), ["body", "algorithms"], None),
    ("empty batches", with_(batches=[]), ["body", "batches"], None),
    ("duplicate seeds", with_(seeds=[1, 2, 1]), ["body", "seeds"], None),
    (
        "duplicate learning rates",
        with_(learning_rates=[0.1, 0.1]),
        ["body", "learning_rates"],
        None,
    ),
    ("duplicate architectures", with_(architectures=["N1", "N1"]), ["body", "architectures"], None),
    ("missing epochs", without("epochs"), ["body", "epochs"], None),
    ("absolute data file", with_(data={"file": "/etc/passwd"}), ["body", "data", "file"], None),
    ("data file with ..", with_(data={"file": "../idem.db"}), ["body", "data", "file"], None),
    (
        "listed data file with ..",
        with_(data=["gaussian-fixed", {"file": "../idem.db"}]),
        ["body", "data", 1, "file"],
        None,
    ),
    ("too many epochs", with_(epochs=1001), ["body", "epochs"], "max_epochs"),
    ("too many trials", with_(seeds=21), ["body"], "max_trials_per_sweep"),
    (
        "samples × dimension",
        with_(batches=[{"samples": 30_000, "batch_size": 100}]),
        ["body", "batches", 0, "samples"],
        "max_samples_x_dim",
    ),
]
LIMITS = {"max_epochs": 1000, "max_trials_per_sweep": 40, "max_samples_x_dim": 100_000}


def test_every_invalid_spec_is_a_422_naming_the_field(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(**LIMITS)
    for case, body, loc, limit in INVALID:
        r = client.post("/sweeps", json=body)
        assert r.status_code == 422, (case, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail, case
        locs = [d["loc"] for d in detail]
        assert any(d[: len(loc)] == loc for d in locs), (case, locs)
        if limit is not None:
            assert detail[0]["setting"] == limit, case
            assert detail[0]["limit"] == LIMITS[limit], case
            assert str(LIMITS[limit]) in detail[0]["msg"], case
        assert "Traceback" not in r.text
    # Nothing was stored by any of them.
    assert client.get("/sweeps").json() == {"data": [], "count": 0}


def test_non_finite_numbers_are_refused(client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = '{"name": "x", "architectures": ["N1"], "algorithms": ["modified"], '
        raw += f'"learning_rates": [{literal}], "batches": [{{"samples": 10, "batch_size": 10}}], '
        raw += '"seeds": 1, "epochs": 3}'
        r = client.post("/sweeps", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, literal
        assert r.json()["detail"][0]["loc"] == ["body", "learning_rates", "list", 0]


def test_malformed_json_is_a_422_not_a_500(client: TestClient) -> None:
    r = client.post("/sweeps", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_skip_invalid_leaves_pairs_out_and_lists_them(client: TestClient) -> None:
    body = with_(architectures=["N1", "N2"], algorithms=["m1", "modified"], skip_invalid=True)
    r = client.post("/sweeps", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["trial_count"] == 3 * 2  # (N1, m1), (N1, modified), (N2, modified) × 2 seeds
    assert [(s["architecture"], s["algorithm"]) for s in created["skipped"]] == [("N2", "m1")]
    trials = client.get(f"/sweeps/{created['id']}/trials").json()
    assert {(t["architecture"], t["algorithm"]) for t in trials["data"]} == {
        ("N1", "m1"),
        ("N1", "modified"),
        ("N2", "modified"),
    }


def test_mapping_data_and_optimizers_are_stored_per_trial_and_filterable(
    client: TestClient,
) -> None:
    body = with_(
        learning_rates={"modified": [0.01], "ordinary": [0.05, 0.1]},
        data=["gaussian-fresh", "gaussian-fixed"],
        optimizers=["sgd", "adam"],
    )
    r = client.post("/sweeps", json=body)
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    assert r.json()["trial_count"] == (1 + 2) * 2 * 2 * 2  # rates × data × optimizers × seeds
    rows = client.get(f"/sweeps/{sweep_id}/trials", params={"limit": 100}).json()["data"]
    assert {(t["algorithm"], t["learning_rate"]) for t in rows} == {
        ("modified", 0.01),
        ("ordinary", 0.05),
        ("ordinary", 0.1),
    }
    assert {(t["data"], t["optimizer"], t["config"]["optimizer"]) for t in rows} == {
        (d, o, o) for d in ("gaussian-fresh", "gaussian-fixed") for o in ("sgd", "adam")
    }
    adam = client.get(f"/sweeps/{sweep_id}/trials", params={"optimizer": "adam"}).json()
    assert adam["count"] == 12 and all(t["optimizer"] == "adam" for t in adam["data"])
    summary = client.get(
        f"/sweeps/{sweep_id}/summary", params={"by": "data,optimizer", "metric": "loss"}
    )
    assert summary.status_code == 200, summary.text
    groups = {(g["data"], g["optimizer"]) for g in summary.json()["data"]}
    assert groups <= {(d, o) for d in ("gaussian-fresh", "gaussian-fixed") for o in ("sgd", "adam")}


def test_submit_then_read(client: TestClient) -> None:
    r = client.post("/sweeps", json=SMALL_SPEC)
    assert r.status_code == 201
    created = r.json()
    assert created == {
        "id": created["id"],
        "status": "queued",
        "trial_count": 4,
        "reused_trials": 0,
        "skipped": [],
    }
    sweep = client.get(f"/sweeps/{created['id']}").json()
    assert sweep["status"] == "queued"
    assert sweep["trial_count"] == 4
    assert sweep["trials_by_status"]["pending"] == 4
    assert sweep["progress"] == 0
    assert sweep["created_at"] and sweep["started_at"] is None and sweep["finished_at"] is None
    assert "ray_dashboard_url" in sweep
    assert sweep["spec"]["seeds"] == 2

    trials = client.get(f"/sweeps/{created['id']}/trials").json()
    assert trials["count"] == 4
    first = trials["data"][0]
    for field in (
        "architecture", "algorithm", "learning_rate", "samples", "batch_size", "seed", "init",
        "data", "status", "idempotent_error", "norm", "trace", "image_dim",
        "epochs_to_threshold", "epochs_run",
    ):  # fmt: skip
        assert field in first, field
    trial = client.get(f"/trials/{first['id']}").json()
    assert trial["config"]["epochs"] == 10
    assert client.get(f"/trials/{first['id']}/epochs").json()["data"] == []


def test_idempotent_retry_returns_the_first_response(client: TestClient) -> None:
    headers = {"Idempotency-Key": "retry-me-123"}
    first = client.post("/sweeps", json=SMALL_SPEC, headers=headers)
    again = client.post("/sweeps", json=SMALL_SPEC, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert client.get("/sweeps").json()["count"] == 1
    # Another key, or none, makes a new sweep (whose trials are not reused: none ran).
    other = client.post("/sweeps", json=SMALL_SPEC, headers={"Idempotency-Key": "other"})
    assert other.json()["id"] != first.json()["id"]
    assert client.get("/sweeps").json()["count"] == 2


def test_a_refused_submit_does_not_burn_its_idempotency_key(client: TestClient) -> None:
    headers = {"Idempotency-Key": "k"}
    assert client.post("/sweeps", json=with_(epochs=0), headers=headers).status_code == 422
    assert client.post("/sweeps", json=SMALL_SPEC, headers=headers).status_code == 201


def test_pagination_and_status_filter(client: TestClient) -> None:
    ids = [client.post("/sweeps", json=with_(name=f"s{i}")).json()["id"] for i in range(5)]
    page1 = client.get("/sweeps", params={"limit": 2}).json()
    page2 = client.get("/sweeps", params={"limit": 2, "offset": 2}).json()
    page3 = client.get("/sweeps", params={"limit": 2, "offset": 4}).json()
    assert page1["count"] == page2["count"] == page3["count"] == 5
    seen = [s["id"] for p in (page1, page2, page3) for s in p["data"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert client.post(f"/sweeps/{ids[0]}/cancel").status_code == 202
    cancelled = client.get("/sweeps", params={"status": "cancelled"}).json()
    assert [s["id"] for s in cancelled["data"]] == [ids[0]] and cancelled["count"] == 1
    assert client.get("/sweeps", params={"status": "queued"}).json()["count"] == 4
    assert client.get("/sweeps", params={"status": "bogus"}).status_code == 422
    assert client.get("/sweeps", params={"limit": 0}).status_code == 422

    trials = [client.get(f"/sweeps/{ids[1]}/trials", params={"limit": 3, "offset": o}).json()
              for o in (0, 3)]  # fmt: skip
    assert [t["count"] for t in trials] == [4, 4]
    assert len(trials[0]["data"]) == 3 and len(trials[1]["data"]) == 1
    filtered = client.get(
        f"/sweeps/{ids[1]}/trials", params={"algorithm": "ordinary", "seed": 1}
    ).json()
    assert filtered["count"] == 1
    assert filtered["data"][0]["algorithm"] == "ordinary" and filtered["data"][0]["seed"] == 1
    assert (
        client.get(f"/sweeps/{ids[1]}/trials", params={"learning_rate": 0.05}).json()["count"] == 4
    )


def test_cancel_is_202_then_409(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=SMALL_SPEC).json()["id"]
    r = client.post(f"/sweeps/{sweep_id}/cancel")
    assert r.status_code == 202
    assert r.json()["status"] == "cancelled"
    sweep = client.get(f"/sweeps/{sweep_id}").json()
    assert sweep["status"] == "cancelled"
    assert sweep["trials_by_status"]["cancelled"] == 4
    again = client.post(f"/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409
    assert "finished" in again.json()["detail"]


def test_body_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2000)
    big = with_(name="x" * 3000)
    assert client.post("/sweeps", json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts streamed bytes
        yield b'{"name": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = client.post("/sweeps", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/sweeps", json=SMALL_SPEC).status_code == 201
    assert client.get("/sweeps").json()["count"] == 1


def test_auth_on_guards_writes_only(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    token = "s3cret-token-value"
    client = make_client(api_tokens=[SecretStr("other-token"), SecretStr(token)])
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        r = client.post("/sweeps", json=SMALL_SPEC, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert token not in r.text
    good = {"Authorization": f"Bearer {token}"}
    r = client.post("/sweeps", json=SMALL_SPEC, headers=good)
    assert r.status_code == 201
    sweep_id = r.json()["id"]
    assert client.post(f"/sweeps/{sweep_id}/cancel").status_code == 401
    # Reads stay open.
    assert client.get(f"/sweeps/{sweep_id}").status_code == 200
    assert client.get("/sweeps").status_code == 200
    assert client.post(f"/sweeps/{sweep_id}/cancel", headers=good).status_code == 202
    assert token not in caplog.text


def test_auth_off_accepts_writes_without_a_token(client: TestClient) -> None:
    assert client.post("/sweeps", json=SMALL_SPEC).status_code == 201


def test_cors_is_closed_by_default_and_opens_for_named_origins(
    make_client: Callable[..., TestClient],
) -> None:
    origin = {"Origin": "http://example.org"}
    closed = make_client().get("/health", headers=origin)
    assert "access-control-allow-origin" not in closed.headers
    opened = make_client(cors_origins=["http://example.org"]).get("/health", headers=origin)
    assert opened.headers["access-control-allow-origin"] == "http://example.org"


def test_health_and_docs(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["database"] in ("sqlite", "postgresql")
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/sweeps", "/sweeps/{sweep_id}/summary", "/sweeps/{sweep_id}/compare"):
        assert path in paths


def test_internal_errors_carry_no_stack_trace(client: TestClient, db_url: str) -> None:
    sweep_id = client.post("/sweeps", json=SMALL_SPEC).json()["id"]
    # Break the store under the running app: the next read fails inside SQL.
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(text("ALTER TABLE trial RENAME TO trial_gone"))
    eng.dispose()
    r = client.get(f"/sweeps/{sweep_id}/trials")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert "Traceback" not in r.text and "trial" not in r.text


def test_a_database_not_at_head_is_refused(empty_db_url: str) -> None:
    from service.app import create_app

    with pytest.raises(SchemaNotCurrent, match="idem db upgrade"):
        create_app(Settings(database_url=empty_db_url))


def test_trials_page_by_cursor_like_offset_and_refuse_ids_past_the_column(
    client: TestClient,
) -> None:
    """after_id pages (keyset) give the same trials as offset pages, each page names the
    next cursor, the last page says none; filters apply; an id beyond the INTEGER
    column is a 422 the schema states (maximum)."""
    spec = {**SMALL_SPEC, "learning_rates": [0.05, 0.1], "seeds": 5}  # 20 trials
    sweep = client.post("/sweeps", json=spec).json()["id"]
    url = f"/sweeps/{sweep}/trials"
    by_offset = [t["id"] for t in client.get(url, params={"limit": 100}).json()["data"]]
    assert len(by_offset) == 20
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 6}
        if cursor is not None:
            params["after_id"] = cursor
        page = client.get(url, params=params).json()
        assert page["count"] == 20
        seen += [t["id"] for t in page["data"]]
        pages += 1
        cursor = page["next_after_id"]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert seen == by_offset and pages == 4
    filtered = client.get(url, params={"after_id": by_offset[9], "algorithm": "ordinary"})
    assert all(
        t["algorithm"] == "ordinary" and t["id"] > by_offset[9] for t in filtered.json()["data"]
    )
    assert filtered.json()["next_after_id"] is None
    schema = client.get("/openapi.json").json()
    params_ = {
        p["name"]: p for p in schema["paths"]["/sweeps/{sweep_id}/trials"]["get"]["parameters"]
    }
    assert params_["sweep_id"]["schema"]["maximum"] == 2**31 - 1
    assert params_["offset"].get("deprecated") is True
    assert client.get(f"/sweeps/{2**31}/trials").status_code == 422
    assert client.get(url, params={"after_id": 2**31}).status_code == 422


def test_a_trials_curve_says_which_epochs_the_sweep_stores(client: TestClient) -> None:
    """record_every is stored with the spec and named by the curve's response."""
    thinned = client.post("/sweeps", json={**SMALL_SPEC, "record_every": 4}).json()["id"]
    plain = client.post("/sweeps", json={**SMALL_SPEC, "name": "plain"}).json()["id"]
    for sweep, every in ((thinned, 4), (plain, 1)):
        trial = client.get(f"/sweeps/{sweep}/trials").json()["data"][0]
        assert client.get(f"/trials/{trial['id']}/epochs").json()["record_every"] == every
    bad = client.post("/sweeps", json={**SMALL_SPEC, "record_every": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "record_every"]
