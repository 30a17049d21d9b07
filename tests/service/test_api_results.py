"""Summary, compare, epochs and plots on a seeded sweep, checked against numbers computed
independently (numpy, scipy) from what ``GET /sweeps/{id}/trials`` returns."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats as sps
from sqlalchemy import Engine

from service.store.engine import session_scope
from service.store.query_fields import COMPARE_GROUP
from service.store.status import TrialStatus
from service.store.trials import finish_trial
from tests.utils.factories import fake_epochs, fake_result

SEEDED_SPEC: dict[str, Any] = {
    "name": "seeded",
    "architectures": ["N1", "B1"],
    "algorithms": ["modified", "ordinary"],
    "learning_rates": [0.01, 0.1],
    "batches": [{"samples": 100, "batch_size": 100}],
    "seeds": 6,
    "epochs": 6,
}
EPOCHS = 6
LEFT_PENDING = 1  # one trial never finishes: it must not count anywhere
PAIR_KEY = (*COMPARE_GROUP, "init", "seed")  # a pair: same group, same init and seed


def seed_sweep(client: TestClient, engine: Engine) -> tuple[int, list[dict[str, Any]]]:
    """Submit SEEDED_SPEC and finish its trials with random (seeded) known metrics:
    some diverged, some never reaching the threshold, one exact tie, one left pending."""
    sweep_id = client.post("/sweeps", json=SEEDED_SPEC).json()["id"]
    trials = client.get(f"/sweeps/{sweep_id}/trials", params={"limit": 1000}).json()["data"]
    rng = np.random.default_rng(1234)
    tie_value = 3.25e-4
    for i, t in enumerate(trials[LEFT_PENDING:], start=LEFT_PENDING):
        # seed 5 of N1 lr 0.01: both algorithms get the same error, an exact tie
        tie = t["architecture"] == "N1" and t["learning_rate"] == 0.01 and t["seed"] == 5
        diverged = rng.random() < 0.12 and not tie
        error = None if diverged else (tie_value if tie else float(10 ** rng.uniform(-6, -1)))
        reached = None if diverged or rng.random() < 0.25 else int(rng.integers(1, EPOCHS + 1))
        result = fake_result(
            idempotent_error=error,
            epochs_to_threshold=reached,
            epochs_run=EPOCHS,
            diverged=diverged,
            image_dim=None if diverged else float(rng.integers(0, 6)),
            norm=float(rng.uniform(0.5, 3)),
        )
        status = TrialStatus.diverged if diverged else TrialStatus.succeeded
        records = fake_epochs(EPOCHS, scale=float(rng.uniform(0.5, 2.0)) * (i + 1))
        with session_scope(engine) as session:
            finish_trial(session, t["id"], status, result, None, records)
    trials = client.get(f"/sweeps/{sweep_id}/trials", params={"limit": 1000}).json()["data"]
    assert sum(t["status"] == "pending" for t in trials) == LEFT_PENDING
    assert any(t["status"] == "diverged" for t in trials)
    return sweep_id, trials


# --- independent computations ---------------------------------------------------------


def expected_summary(
    trials: list[dict[str, Any]], by: list[str], metric: str, values: dict[int, float | None]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for t in trials:
        groups[tuple(t[f] for f in by)].append(t)
    out = {}
    for key, members in groups.items():
        xs = np.array(
            [values[t["id"]] for t in members
             if t["status"] == "succeeded" and values[t["id"]] is not None],
            dtype=float,
        )  # fmt: skip
        out[key] = {
            "n": len(xs),
            "mean": float(xs.mean()) if len(xs) else None,
            "std": float(xs.std(ddof=1)) if len(xs) > 1 else None,
            "min": float(xs.min()) if len(xs) else None,
            "median": float(np.median(xs)) if len(xs) else None,
            "max": float(xs.max()) if len(xs) else None,
            "diverged": sum(t["status"] == "diverged" for t in members),
            "never": sum(
                t["status"] in ("succeeded", "diverged") and t["epochs_to_threshold"] is None
                for t in members
            ),
        }
    return out


def assert_close(got: float | None, want: float | None, what: str) -> None:
    if want is None:
        assert got is None, what
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), what


def test_summary_matches_numpy(client: TestClient, engine: Engine) -> None:
    sweep_id, trials = seed_sweep(client, engine)
    for by, metric in [
        (["architecture", "algorithm", "learning_rate", "batch_size"], "idempotent_error"),
        (["algorithm"], "epochs_to_threshold"),
        (["architecture", "seed"], "image_dim"),
        (["learning_rate"], "norm"),
    ]:
        r = client.get(f"/sweeps/{sweep_id}/summary", params={"by": ",".join(by), "metric": metric})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["by"] == by and body["metric"] == metric
        want = expected_summary(trials, by, metric, {t["id"]: t[metric] for t in trials})
        got = {tuple(row[f] for f in by): row for row in body["data"]}
        assert set(got) == set(want), (by, metric)
        for key, w in want.items():
            for stat in ("mean", "std", "min", "median", "max"):
                assert_close(got[key][stat], w[stat], f"{by} {metric} {key} {stat}")
            for count in ("n", "diverged", "never"):
                assert got[key][count] == w[count], (by, metric, key, count)


def test_summary_at_an_epoch_matches_the_curves(client: TestClient, engine: Engine) -> None:
    sweep_id, trials = seed_sweep(client, engine)
    k = 3
    at_k: dict[int, float | None] = {}
    for t in trials:
        epochs = client.get(f"/trials/{t['id']}/epochs").json()["data"]
        at_k[t["id"]] = next((e["loss"] for e in epochs if e["epoch"] == k), None)
    by = ["architecture", "algorithm"]
    body = client.get(
        f"/sweeps/{sweep_id}/summary", params={"by": ",".join(by), "metric": "loss", "epoch": k}
    ).json()
    want = expected_summary(trials, by, "loss", at_k)
    for row in body["data"]:
        w = want[tuple(row[f] for f in by)]
        assert row["n"] == w["n"]
        for stat in ("mean", "std", "min", "median", "max"):
            assert_close(row[stat], w[stat], stat)


def expected_compare(
    trials: list[dict[str, Any]], a: str, b: str, metric: str, better: str | None
) -> dict[tuple[Any, ...], dict[str, Any]]:
    done = [t for t in trials if t["status"] in ("succeeded", "diverged")]
    by_key = {(t["algorithm"], *(t[f] for f in PAIR_KEY)): t for t in done}
    groups: dict[tuple[Any, ...], list[tuple[float | None, float | None]]] = defaultdict(list)
    for key, ta in by_key.items():
        if key[0] != a or (b, *key[1:]) not in by_key:
            continue
        tb = by_key[(b, *key[1:])]
        groups[key[1:-1]].append((ta[metric], tb[metric]))  # group: the key without seed
    out = {}
    for group, pairs in groups.items():
        out[group] = independent_compare(pairs, metric, better)
    return out


def independent_compare(
    pairs: list[tuple[float | None, float | None]], metric: str, better: str | None
) -> dict[str, Any]:
    """The documented method written out again: log10 ratios floored at 1e-12 for errors,
    ties within 1% (log10 1.01); a missing value one unit beyond the worst present value
    (metrics with a direction) or the pair left out (without); scipy's Wilcoxon."""
    log = metric == "idempotent_error"

    def scale(v: float | None) -> float | None:
        return None if v is None else (math.log10(max(v, 1e-12)) if log else float(v))

    scaled = [(scale(x), scale(y)) for x, y in pairs]
    if better is None:
        xs = [(x, y) for x, y in scaled if x is not None and y is not None]
    else:
        present = [v for p in scaled for v in p if v is not None]
        worst = max(present) + 1 if present else 0.0
        xs = [(worst if x is None else x, worst if y is None else y) for x, y in scaled]
    d: np.ndarray = np.array([x - y for x, y in xs], dtype=np.float64)
    d[np.abs(d) <= (math.log10(1.01) if log else 0.0)] = 0.0
    p: float | None = None
    if len(d):
        nonzero = int(np.count_nonzero(d))
        p = 1.0
        if nonzero:
            method = "exact" if nonzero <= 50 else "asymptotic"
            p = float(sps.wilcoxon(d, method=method).pvalue)
    return {
        "pairs": len(d),
        "a_wins": int((d < 0).sum()) if better else None,
        "b_wins": int((d > 0).sum()) if better else None,
        "ties": int((d == 0).sum()),
        "effect": float(np.median(d)) if len(d) else None,
        "p": p,
    }


@pytest.mark.parametrize(
    ("metric", "better"),
    [("idempotent_error", "lower"), ("epochs_to_threshold", "lower"), ("image_dim", None)],
)
def test_compare_matches_scipy(
    client: TestClient, engine: Engine, metric: str, better: str | None
) -> None:
    sweep_id, trials = seed_sweep(client, engine)
    r = client.get(
        f"/sweeps/{sweep_id}/compare", params={"a": "modified", "b": "ordinary", "metric": metric}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["better"] == better
    want = expected_compare(trials, "modified", "ordinary", metric, better)
    group_fields = [f for f in PAIR_KEY if f != "seed"]
    assert body["by"] == group_fields
    got = {tuple(row[f] for f in group_fields): row for row in body["data"]}
    assert set(got) == set(want)
    for key, w in want.items():
        for field in ("pairs", "a_wins", "b_wins", "ties"):
            assert got[key][field] == w[field], (metric, key, field)
        for field in ("effect", "p"):
            assert_close(got[key][field], w[field], f"{metric} {key} {field}")
        low, high = got[key]["ci_low"], got[key]["ci_high"]
        assert low is None or low <= got[key]["effect"] <= high
    # Holm over this response's groups: the smallest p times the number of groups
    ps = sorted(row["p"] for row in body["data"] if row["p"] is not None)
    smallest = min(body["data"], key=lambda row: row["p"])
    assert smallest["p_corrected"] == pytest.approx(min(1.0, ps[0] * len(ps)))
    # The pending trial's pair is left out; the tie is counted.
    if better is not None:
        assert sum(row["pairs"] for row in body["data"]) == len(trials) // 2 - LEFT_PENDING
    if metric == "idempotent_error":
        assert sum(row["ties"] for row in body["data"]) >= 1


def test_compare_refuses_unknown_algorithms_and_metrics(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=SEEDED_SPEC).json()["id"]
    cases = [
        ({"a": "adam"}, ["query", "a"]),
        ({"metric": "accuracy"}, ["query", "metric"]),
    ]
    for params, loc in cases:
        r = client.get(f"/sweeps/{sweep_id}/compare", params=params)
        assert r.status_code == 422, params
        assert r.json()["detail"][0]["loc"] == loc
    # The schema cannot say "a differs from b": a against itself is answered, every pair
    # a run with itself (no wins either way).
    same = client.get(f"/sweeps/{sweep_id}/compare", params={"a": "ordinary", "b": "ordinary"})
    assert same.status_code == 200, same.text
    assert all(not row.get("a_wins") and not row.get("b_wins") for row in same.json()["data"])


def test_summary_refuses_unknown_fields_and_metrics(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=SEEDED_SPEC).json()["id"]
    for params, loc in [
        ({"by": "architecture,colour"}, ["query", "by"]),
        ({"by": "architecture; DROP TABLE trial"}, ["query", "by"]),
        ({"by": ""}, ["query", "by"]),
        ({"metric": "idempotent_error) --"}, ["query", "metric"]),
        ({"epoch": 0}, ["query", "epoch"]),
        ({"epoch": 2**31}, ["query", "epoch"]),
    ]:
        r = client.get(f"/sweeps/{sweep_id}/summary", params=params)
        assert r.status_code == 422, params
        assert r.json()["detail"][0]["loc"] == loc, params
    # A known metric the store does not keep per epoch (or per run): no such values.
    for params in ({"metric": "epochs_to_threshold", "epoch": 3}, {"metric": "seconds"}):
        r = client.get(f"/sweeps/{sweep_id}/summary", params=params)
        assert r.status_code == 404 and params["metric"] in r.json()["detail"], r.text
    assert client.get(f"/sweeps/{sweep_id}/summary").status_code == 200


def test_epochs_and_stride(client: TestClient, engine: Engine) -> None:
    _, trials = seed_sweep(client, engine)
    done = next(t for t in trials if t["status"] == "succeeded")
    full = client.get(f"/trials/{done['id']}/epochs").json()
    assert full["count"] == EPOCHS
    assert [e["epoch"] for e in full["data"]] == list(range(1, EPOCHS + 1))
    strided = client.get(f"/trials/{done['id']}/epochs", params={"stride": 2}).json()
    assert [e["epoch"] for e in strided["data"]] == [1, 3, 5, 6]  # every 2nd, plus the last
    assert strided["data"][1] == full["data"][2]
    assert client.get(f"/trials/{done['id']}/epochs", params={"stride": 0}).status_code == 422
    trial = client.get(f"/trials/{done['id']}").json()
    assert trial["result"]["eigenvalues"] == [[1.0, 0.0], [0.0, 0.0]]


def _png_ok(content: bytes) -> None:
    import matplotlib.image

    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(content), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def _svg_ok(content: bytes) -> None:
    root = ET.fromstring(content)
    assert root.tag.endswith("svg")


def test_plots_are_valid_png_and_svg(client: TestClient, engine: Engine) -> None:
    sweep_id, _ = seed_sweep(client, engine)
    base = f"/sweeps/{sweep_id}/plots"
    r = client.get(f"{base}/curves.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    _png_ok(r.content)
    r = client.get(f"{base}/curves.png", params={"format": "svg", "metric": "image_dim"})
    assert r.headers["content-type"] == "image/svg+xml"
    _svg_ok(r.content)
    r = client.get(
        f"{base}/distribution.png", params={"by": "architecture,algorithm,learning_rate"}
    )
    assert r.status_code == 200
    _png_ok(r.content)
    r = client.get(
        f"{base}/distribution.png", params={"format": "svg", "metric": "epochs_to_threshold"}
    )
    _svg_ok(r.content)
    assert client.get(f"{base}/curves.png", params={"metric": "nope"}).status_code == 422
    assert client.get(f"{base}/curves.png", params={"format": "gif"}).status_code == 422


def test_plots_of_an_empty_sweep_still_render(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=SEEDED_SPEC).json()["id"]
    _png_ok(client.get(f"/sweeps/{sweep_id}/plots/curves.png").content)
    _png_ok(client.get(f"/sweeps/{sweep_id}/plots/distribution.png").content)
