"""Provenance and reuse end to end, on SQLite and PostgreSQL, without Ray.

Sweeps go in through the real API (TestClient); their trials run through the real
trainable (``workers.trainable.run_group``) and are written by the real Tune callback
(``StoreCallback.write_result``), the path a Ray worker takes minus Ray itself
(tests/workers/test_provenance.py runs it on Ray).
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from idemcore.fingerprint import code_fingerprint
from idemcore.provenance import PROVENANCE_FIELDS, apply_numerics
from service.report.build import build_report
from service.report.model import load_report_data
from service.report.provenance import provenance_rows
from service.store.engine import make_engine, session_scope
from service.store.models import Trial
from tests.service.conftest import SMALL_SPEC
from tests.utils.idemcore_copy import copy_idemcore, env_importing

PACKED_SPEC = {**SMALL_SPEC, "name": "provenance", "pack": 2}

# Submit a spec through the real app in a process whose idemcore may be a changed copy.
SUBMIT = """
import json, sys
from fastapi.testclient import TestClient
import idemcore.fingerprint
from service.app import create_app
from service.settings import Settings
db_url, data_dir, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with TestClient(create_app(Settings(database_url=db_url, data_dir=data_dir))) as client:
    created = client.post("/sweeps", json=spec).json()
print(json.dumps([str(idemcore.fingerprint.PACKAGE_DIR), created["reused_trials"]]))
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def ieee_after() -> Iterator[None]:
    """A test that ran a tf32 trial must not leave TF32 on for the next one."""
    yield
    apply_numerics(False)


def run_without_ray(engine: Engine, sweep_id: int, pack: int | bool | None = None) -> None:
    """Play a worker: claim, train every trial with the trainable, write via the callback."""
    from service.store.claim import claim_sweep, register_worker
    from service.store.leases import finish_sweep
    from service.store.trials import mark_trials_running, unfinished_trials
    from workers.trainable import run_group
    from workers.tune_runner import StoreCallback, make_groups

    with session_scope(engine) as s:
        worker = register_worker(s, "host")
    assert claim_sweep(engine, worker) is not None
    with session_scope(engine) as s:
        todos = unfinished_trials(s, sweep_id)
        mark_trials_running(s, [t.id for t in todos], node_ip="127.0.0.1")
    callback = StoreCallback(engine)
    for group in make_groups(todos, pack):
        members = [(t.id, t.config) for t in group]
        run_group(members, device=torch.device("cpu"), report_every=5, report=callback.write_result)
    with session_scope(engine) as s:
        finish_sweep(s, sweep_id, worker)


def submit(client: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/sweeps", json=spec)
    assert response.status_code == 201, response.text
    return dict(response.json())


def sweep_trials(client: TestClient, sweep_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/sweeps/{sweep_id}/trials", params={"limit": 100})
    assert response.status_code == 200, response.text
    return sorted(response.json()["data"], key=lambda t: t["id"])


def test_provenance_is_recorded_returned_reused_and_reported(
    client: TestClient, engine: Engine
) -> None:
    first = submit(client, PACKED_SPEC)
    assert first["reused_trials"] == 0
    run_without_ray(engine, first["id"], pack=2)

    ran = sweep_trials(client, first["id"])
    assert len(ran) == 4 and {t["status"] for t in ran} == {"succeeded"}
    for t in ran:
        assert t["code_fingerprint"] == code_fingerprint()
        assert t["idemsweep_version"] == metadata.version("idemsweep")
        assert t["torch_version"] == torch.__version__
        assert t["python_version"] and t["device"].startswith("cpu: ")
        assert t["host"] == socket.gethostname() and t["ray_node_id"] is None
        assert t["tf32"] is False and t["reused_from"] is None
        assert t["started_at"] <= t["finished_at"]
        detail = client.get(f"/trials/{t['id']}").json()
        assert {k: detail[k] for k in t} == t  # the detail view carries the same fields
    # pack: 2 over (2 algorithms x 2 seeds): one pack per algorithm, led by its first trial.
    packs: dict[int, list[int]] = {}
    for t in ran:
        assert t["packed"] is True
        packs.setdefault(t["pack_id"], []).append(t["id"])
    assert all(pack_id == min(ids) and len(ids) == 2 for pack_id, ids in packs.items())

    # The trial export carries the provenance columns (derived from the trial table).
    exported = client.get(f"/sweeps/{first['id']}/trials", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(table) == 4
    for name in PROVENANCE_FIELDS:
        assert name in table[0], name
    assert {r["code_fingerprint"] for r in table} == {code_fingerprint()}
    assert {r["device"] for r in table} == {ran[0]["device"]}

    again = submit(client, {**PACKED_SPEC, "name": "again"})
    assert again["reused_trials"] == 4 and again["status"] == "succeeded"
    reused = sweep_trials(client, again["id"])
    by_id = {t["id"]: t for t in ran}
    provenance_fields = ("code_fingerprint", "device", "host", "packed", "pack_id", "tf32")
    for t in reused:
        source = by_id[t["reused_from"]]
        assert {k: t[k] for k in provenance_fields} == {k: source[k] for k in provenance_fields}

    with session_scope(engine, readonly=True) as s:
        (row,) = provenance_rows(load_report_data(s, again["id"]).trials)
        html = build_report(load_report_data(s, again["id"])).html
    assert (row.runs, row.reused, row.packed) == (4, 4, 4)
    assert row.reused_from == tuple(sorted(by_id))
    assert row.code_fingerprint == code_fingerprint()
    assert "Where the results come from" in html and code_fingerprint()[:12] in html

    fresh = submit(client, {**PACKED_SPEC, "name": "fresh", "reuse": False})
    assert (fresh["reused_trials"], fresh["status"]) == (0, "queued")
    assert {t["status"] for t in sweep_trials(client, fresh["id"])} == {"pending"}


def test_one_changed_byte_in_idemcore_and_nothing_is_reused(
    client: TestClient, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """The same spec, submitted by an API whose idemcore is a copy: reused in full when
    the copy is identical, not at all when one byte of one source file differs."""
    first = submit(client, SMALL_SPEC)
    run_without_ray(engine, first["id"])
    assert submit(client, SMALL_SPEC)["reused_trials"] == 4

    def reused_by(root: Path) -> int:
        out = subprocess.run(
            [sys.executable, "-c", SUBMIT, db_url, str(tmp_path / "data"), json.dumps(SMALL_SPEC)],
            env=env_importing(root),
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        package, reused = json.loads(out.stdout.strip().splitlines()[-1])
        assert package == str(root / "idemcore")  # the copy was imported, not the original
        return int(reused)

    assert reused_by(copy_idemcore(tmp_path / "same")) == 4
    assert reused_by(copy_idemcore(tmp_path / "changed", change_one_byte=True)) == 0


def test_tf32_is_part_of_the_key_applied_in_the_trial_and_recorded(
    client: TestClient, engine: Engine
) -> None:
    plain = submit(client, SMALL_SPEC)
    run_without_ray(engine, plain["id"])
    with_tf32 = submit(client, {**SMALL_SPEC, "tf32": True})
    assert with_tf32["reused_trials"] == 0  # a different key
    run_without_ray(engine, with_tf32["id"])
    trials = sweep_trials(client, with_tf32["id"])
    assert {(t["config"]["tf32"], t["tf32"]) for t in trials} == {(True, True)}
    assert {t["tf32"] for t in sweep_trials(client, plain["id"])} == {False}
    assert submit(client, {**SMALL_SPEC, "tf32": True})["reused_trials"] == 4


def test_the_trial_s_own_reuse_key_replaces_the_submitted_one(
    client: TestClient, engine: Engine
) -> None:
    """An API running other code computes other keys; the store keeps the trial's."""
    created = submit(client, SMALL_SPEC)
    with session_scope(engine) as s:
        s.execute(update(Trial).where(Trial.sweep_id == created["id"]).values(config_hash="x"))
    run_without_ray(engine, created["id"])
    with session_scope(engine, readonly=True) as s:
        keys = {t.config_hash for t in load_report_data(s, created["id"]).trials}
    assert "x" not in keys and len(keys) == 4
    assert submit(client, SMALL_SPEC)["reused_trials"] == 4


def test_the_report_table_shows_unrecorded_runs(client: TestClient, engine: Engine) -> None:
    created = submit(client, SMALL_SPEC)
    with session_scope(engine, readonly=True) as s:
        data = load_report_data(s, created["id"])
    (row,) = provenance_rows(data.trials)
    assert (row.code_fingerprint, row.runs, row.reused, row.hosts) == (None, 4, 0, 0)
