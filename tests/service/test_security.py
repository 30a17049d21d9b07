"""Security and bad-input guarantees of the API, on the real app and both databases.

Tokens are compared in constant time and never logged; SQL sees user input only as
bound parameters (``by``/``metric`` are whitelisted: injection attempts are 422 and the
tables are untouched); CORS is closed by default; the ``file`` data source reads only
under the data directory; oversized bodies are 413; a spec past the trial limit is refused
before anything is stored; unknown ids are 404; malformed specs to ``idem submit`` are one
line. See docs/guarantees.md.
"""

from __future__ import annotations

import copy
import hmac
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from service.settings import Settings
from tests.service.conftest import SMALL_SPEC
from tests.utils.factories import fake_epochs, fake_result
from tests.utils.processes import free_port, wait_healthy

TOKEN = "tok-5f1c9e0b7a2d4c68a3e1"
OTHER = "tok-0000000000000000000a"
TABLES = ("sweep", "trial", "epoch_metric", "idempotency_key")


def spec(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SMALL_SPEC)
    body.update(changes)
    return body


def table_counts(db_url: str) -> dict[str, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES
            }
    finally:
        engine.dispose()


def finished_sweep(client: TestClient, db_url: str) -> int:
    """A submitted sweep whose trials all succeeded (so result routes hit real rows)."""
    from service.store.engine import make_engine, session_scope
    from service.store.status import TrialStatus
    from service.store.trials import finish_trial, unfinished_trials

    sweep_id: int = client.post("/sweeps", json=SMALL_SPEC).json()["id"]
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            todo = unfinished_trials(s, sweep_id)
        for i, t in enumerate(todo):
            with session_scope(engine) as s:
                finish_trial(
                    s,
                    t.id,
                    TrialStatus.succeeded,
                    fake_result(idempotent_error=1e-4 * (i + 1), epochs_run=5),
                    None,
                    fake_epochs(5),
                )
    finally:
        engine.dispose()
    return sweep_id


# --- tokens -----------------------------------------------------------------------------


def test_tokens_are_compared_with_compare_digest_against_every_token(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every configured token goes through ``hmac.compare_digest`` on every write, so
    neither where a guess differs nor which token matched shows in the timing."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = make_client(api_tokens=[SecretStr(OTHER), SecretStr(TOKEN)])
    for presented, code in ((TOKEN, 201), (OTHER, 201), (TOKEN[:-1] + "x", 401)):
        calls.clear()
        r = client.post(
            "/sweeps", json=SMALL_SPEC, headers={"Authorization": f"Bearer {presented}"}
        )
        assert r.status_code == code
        assert sorted(b for _, b in calls) == sorted([OTHER.encode(), TOKEN.encode()])
        assert all(a == presented.encode() for a, _ in calls)


def test_tokens_never_appear_in_logs_or_responses(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture, db_url: str
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    client = make_client(api_tokens=[SecretStr(TOKEN)])
    responses = [
        client.post("/sweeps", json=SMALL_SPEC, headers={"Authorization": f"Bearer {TOKEN}"}),
        client.post("/sweeps", json=SMALL_SPEC, headers={"Authorization": f"Bearer {TOKEN}x"}),
        client.post("/sweeps", json=SMALL_SPEC, headers={"Authorization": f"Basic {TOKEN}"}),
        client.post("/sweeps/1/cancel", headers={"Authorization": f"Bearer {TOKEN}"}),
        client.get("/sweeps/1", headers={"Authorization": f"Bearer {TOKEN}"}),
    ]
    assert [r.status_code for r in responses] == [201, 401, 401, 202, 200]
    assert all(TOKEN not in r.text and TOKEN not in str(r.headers) for r in responses)
    assert TOKEN not in caplog.text
    settings = Settings(database_url=db_url, api_tokens=[SecretStr(TOKEN)])
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())


@pytest.mark.slow
def test_idem_api_process_never_logs_the_token(tmp_path: Path) -> None:
    """The real server at debug log level (uvicorn access log included)."""
    from service.store.engine import upgrade_database

    upgrade_database(f"sqlite:///{tmp_path / 'idem.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    env.update(IDEM_DATA_DIR=str(tmp_path), IDEM_API_TOKENS=f'["{TOKEN}"]')
    port = free_port()
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idemsweep", "api", "--port", str(port), "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=60, log=log)
        good = httpx.post(
            f"{url}/sweeps",
            json=SMALL_SPEC,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        bad = httpx.post(
            f"{url}/sweeps",
            json=SMALL_SPEC,
            headers={"Authorization": f"Bearer {TOKEN}0"},
            timeout=60,
        )
        assert (good.status_code, bad.status_code) == (201, 401)
    finally:
        proc.terminate()
        proc.wait(20)
    output = log.read_text()
    assert "POST /sweeps" in output  # the access log did run
    assert TOKEN not in output


# --- SQL injection ----------------------------------------------------------------------

INJECTIONS = [
    "architecture; DROP TABLE trial; --",
    "architecture) FROM trial; DELETE FROM trial; --",
    "architecture,algorithm' OR '1'='1",
    'architecture"; DROP TABLE sweep; --',
    "1=1",
    "architecture/**/",
    "trial.architecture",
    "(SELECT 1)",
]


@pytest.mark.parametrize(
    "route", ["summary", "compare", "plots/curves.png", "plots/distribution.png"]
)
def test_injection_in_by_and_metric_is_a_422_and_touches_nothing(
    client: TestClient, db_url: str, route: str
) -> None:
    sweep_id = finished_sweep(client, db_url)
    before = table_counts(db_url)
    for attempt in INJECTIONS:
        params = [("metric", attempt)]
        if route != "compare":
            params.append(("by", attempt))
        for name, value in params:
            r = client.get(f"/sweeps/{sweep_id}/{route}", params={name: value})
            assert r.status_code == 422, (route, name, value, r.text)
            assert ["query", name] == r.json()["detail"][0]["loc"][:2]
    assert table_counts(db_url) == before
    assert client.get(f"/sweeps/{sweep_id}/summary").status_code == 200


def test_filter_values_are_bound_parameters(client: TestClient, db_url: str) -> None:
    sweep_id = finished_sweep(client, db_url)
    before = table_counts(db_url)
    for field in ("architecture", "algorithm", "init", "data"):
        for value in ("N1' OR '1'='1", "N1'; DELETE FROM trial; --", "%"):
            r = client.get(f"/sweeps/{sweep_id}/trials", params={field: value})
            assert r.status_code == 200 and r.json()["count"] == 0, (field, value, r.text)
    assert client.get(f"/sweeps/{sweep_id}/trials").json()["count"] == 4
    assert table_counts(db_url) == before


# --- CORS -------------------------------------------------------------------------------


def test_cors_is_closed_by_default(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    origin = {"Origin": "https://evil.example"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    for r in (
        client.get("/sweeps", headers=origin),
        client.post("/sweeps", json=SMALL_SPEC, headers=origin),
        client.options("/sweeps", headers=preflight),
    ):
        assert not any(h.startswith("access-control-") for h in r.headers), r.headers
    # Opened for one origin, it stays closed for every other.
    opened = make_client(cors_origins=["https://lab.example"])
    r = opened.options("/sweeps", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert opened.get("/sweeps", headers=origin).headers.get("access-control-allow-origin") is None
    ok = opened.get("/sweeps", headers={"Origin": "https://lab.example"})
    assert ok.headers["access-control-allow-origin"] == "https://lab.example"


# --- the file data source ---------------------------------------------------------------


def test_file_data_reads_only_under_the_data_dir(
    make_client: Callable[..., TestClient], tmp_path: Path, db_url: str
) -> None:
    data_dir = tmp_path / "datadir"
    (data_dir / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    array = np.random.default_rng(0).standard_normal((300, 5))  # N1 takes dimension 5
    np.save(outside / "secret.npy", array)
    np.save(data_dir / "ok.npy", array)
    (data_dir / "link-out.npy").symlink_to(outside / "secret.npy")
    (data_dir / "dir-out").symlink_to(outside, target_is_directory=True)
    (data_dir / "sub" / "link-in.npy").symlink_to(data_dir / "ok.npy")
    client = make_client(data_dir=data_dir)

    refused = [
        str(outside / "secret.npy"),  # absolute
        "/etc/passwd",
        "../outside/secret.npy",  # ..
        "sub/../../outside/secret.npy",
        "sub/../ok.npy",  # any .. at all
        "link-out.npy",  # a symlink leading out
        "dir-out/secret.npy",  # through a symlinked directory
        "..\\outside\\secret.npy",
        "C:\\outside\\secret.npy",
    ]
    before = table_counts(db_url)
    for name in refused:
        r = client.post("/sweeps", json=spec(data={"file": name}))
        assert r.status_code == 422, (name, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "data", "file"], (name, r.text)
        assert "secret" not in r.text or name in r.text  # no content of the file leaks
    assert table_counts(db_url) == before
    for name in ("ok.npy", "sub/link-in.npy"):  # inside (a symlink staying inside is fine)
        assert client.post("/sweeps", json=spec(data={"file": name})).status_code == 201, name


# --- bad input: size, limits, ids, malformed specs ----------------------------------------


def test_a_body_over_one_mib_is_413_and_stores_nothing(client: TestClient, db_url: str) -> None:
    before = table_counts(db_url)
    big = spec(name="x" * (1024 * 1024))
    r = client.post("/sweeps", json=big)
    assert r.status_code == 413
    raw = b'{"name": "' + b"y" * (1024 * 1024 + 1) + b'"}'
    r = client.post("/sweeps", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert table_counts(db_url) == before
    # Just under the limit is read (and refused for what it says, not for its size).
    r = client.post("/sweeps", json=spec(name="x" * (1024 * 1024 - 1000)))
    assert r.status_code == 422


def test_a_spec_past_the_trial_limit_stores_nothing(
    make_client: Callable[..., TestClient], db_url: str
) -> None:
    client = make_client(max_trials_per_sweep=50)
    client.post("/sweeps", json=SMALL_SPEC)  # something already there that must not change
    before = table_counts(db_url)
    huge = spec(
        architectures=["N1", "N2", "N3", "N4"],
        algorithms=["modified", "ordinary"],
        learning_rates=[0.01, 0.02, 0.05, 0.1],
        seeds=1000,  # 4 × 2 × 4 × 1000 = 32,000 trials
    )
    r = client.post("/sweeps", json=huge, headers={"Idempotency-Key": "huge"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["setting"] == "max_trials_per_sweep" and detail["limit"] == 50
    assert table_counts(db_url) == before
    # The refused key was not burnt: the same key with a valid spec is a fresh 201.
    r = client.post("/sweeps", json=SMALL_SPEC, headers={"Idempotency-Key": "huge"})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sweeps/{}"),
        ("GET", "/sweeps/{}/trials"),
        ("GET", "/sweeps/{}/summary"),
        ("GET", "/sweeps/{}/compare"),
        ("GET", "/sweeps/{}/plots/curves.png"),
        ("GET", "/sweeps/{}/plots/distribution.png"),
        ("GET", "/sweeps/{}/report"),
        ("POST", "/sweeps/{}/cancel"),
        ("GET", "/trials/{}"),
        ("GET", "/trials/{}/epochs"),
    ],
)
def test_unknown_ids_are_404_and_ids_past_the_column_range_422(
    client: TestClient, backend: str, method: str, path: str
) -> None:
    """docs/guarantees.md: unknown ids are 404 on every route that takes one; an id past
    the INTEGER columns' 32 bits (the schema's maximum, on both backends) is not an id at
    all: a 422 naming the path parameter, never a 500."""
    first_too_big = 2**31
    for unknown in (0, -1, 987654321, first_too_big - 1):
        r = client.request(method, path.format(unknown))
        assert r.status_code == 404, (path, unknown, r.text)
        assert "not found" in r.json()["detail"], r.text
    for too_big in (first_too_big, 2**63, 2**70):
        r = client.request(method, path.format(too_big))
        assert r.status_code == 422, (path, too_big, r.text)
        assert r.json()["detail"][0]["loc"][0] == "path", r.text


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tabs.yaml", b"name: x\n\tarchitectures: [N1]\n"),
        ("dup.yaml", b"name: x\nname: y\n: :\n"),
        ("binary.yaml", b"\xff\xfe\x00\x01garbage\x80"),
        ("scalar.yaml", b"just a string\n"),
        ("empty.yaml", b""),
        ("anchors.yaml", b"a: &x [*x]\n"),
    ],
)
def test_malformed_yaml_to_submit_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes,
) -> None:
    from idemsweep.cli import main

    path = tmp_path / name
    path.write_bytes(content)
    monkeypatch.setenv("IDEM_URL", f"http://127.0.0.1:{free_port()}")  # never reached
    code = main(["submit", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert name in err
