"""The analysts' views (migration 0004) and every query of docs/sql.md, on SQLite and
PostgreSQL: trial_result holds every column the store knows and the report's solution
kind; epoch_result equals the epochs export; the documented queries agree with the API's
SQL aggregates. Plus docker compose's read-only analyst role, on the real PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from idemcore.provenance import Provenance
from service.report.kinds import classify
from service.store import curves as store_curves
from service.store import export, queries
from service.store import results as store_results
from service.store.engine import session_scope, upgrade_database
from service.store.models import FINAL_METRIC_COLUMNS
from service.store.query_fields import TRIAL_FIELDS
from service.store.status import TrialStatus
from service.store.trials import finish_trial, mark_trials_running, unfinished_trials
from tests.utils.factories import add_sweep, fake_epochs, fake_result, make_config, make_grid

ROOT = Path(__file__).parents[3]
DOCS = ROOT / "docs" / "sql.md"
INIT_SCRIPT = ROOT / "docker" / "postgres-init" / "10-analyst.sh"
EPOCHS = 4


def doc_queries() -> dict[str, str]:
    """docs/sql.md's SQL blocks by their ``-- name:``."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S)
    named = {}
    for block in blocks:
        match = re.match(r"-- name: (\w+)\n", block)
        assert match, f"a SQL block without '-- name:' in docs/sql.md: {block[:60]}"
        named[match.group(1)] = block
    return named


def rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def finish(engine: Engine, trial_id: int, status: TrialStatus, **result: Any) -> None:
    with session_scope(engine) as s:
        finish_trial(s, trial_id, status, fake_result(**result), None, fake_epochs(EPOCHS))


@pytest.fixture
def seeded(engine: Engine) -> int:
    """Sweep 1: N1/B2 × modified/ordinary × 2 lrs × 3 seeds, finished with varied
    errors; one trial left pending and one diverged. Sweep 2 reuses part of it."""
    grid = make_grid(architectures=("N1", "B2"), seeds=(0, 1, 2), epochs=EPOCHS)
    sweep_id = add_sweep(engine, grid, name="seeded").id
    assert sweep_id == 1
    with session_scope(engine) as s:
        todo = unfinished_trials(s, sweep_id)
        mark_trials_running(s, [t.id for t in todo[1:]], node_ip="127.0.0.1")
    for i, t in enumerate(todo[1:], start=1):
        if i == 5:
            finish(engine, t.id, TrialStatus.diverged, idempotent_error=None, diverged=True)
            continue
        error = 10 ** (-5 + (i * 7 % 11) / 4)  # some above the 1e-3 threshold
        dim = [0.2, 2.0, 4.7, 99.8, 3.0][i % 5]
        finish(engine, t.id, TrialStatus.succeeded, idempotent_error=error, image_dim=dim)
    add_sweep(engine, make_grid(architectures=("N1",), seeds=(0, 1), epochs=EPOCHS), name="again")
    return sweep_id


def test_trial_result_has_every_column_and_the_reports_solution_kind(
    engine: Engine, seeded: int
) -> None:
    view = rows(engine, "SELECT * FROM trial_result ORDER BY trial_id")
    provenance = [f.name for f in dataclasses.fields(Provenance)]
    wanted = ["sweep_id", "sweep_name", "trial_id", "status", *TRIAL_FIELDS]
    wanted += ["epochs", "threshold", *FINAL_METRIC_COLUMNS, "solution_kind", *provenance]
    wanted += ["reused_from", "source_trial_id", "source_sweep_id"]
    assert set(wanted) <= set(view[0]), set(wanted) - set(view[0])
    with session_scope(engine, readonly=True) as s:
        trials = queries.sweep_trials(s, seeded) + queries.sweep_trials(s, 2)
    by_id = {t.id: t for t in trials}
    kinds = set()
    for row in view:
        trial = by_id[row["trial_id"]]
        assert row["solution_kind"] == classify(trial, row["threshold"]).value
        kinds.add(row["solution_kind"])
        assert row["epochs"] == EPOCHS and row["sweep_name"] in ("seeded", "again")
        for column in (*TRIAL_FIELDS, *FINAL_METRIC_COLUMNS, "status"):
            assert row[column] == getattr(trial, column), column
        source = trial.reused_from or trial.id
        assert row["source_trial_id"] == source
        assert row["source_sweep_id"] == by_id[source].sweep_id
    assert kinds == {
        "null map", "projection", "identity", "not idempotent", "diverged", "unfinished"
    }  # fmt: skip
    assert sum(r["reused_from"] is not None for r in view) > 0


def test_solution_kind_of_a_custom_architecture_uses_its_input_dimension(
    engine: Engine,
) -> None:
    layers = [
        {"in_features": 3, "out_features": 6, "activation": "tanh"},
        {"in_features": 6, "out_features": 3, "activation": "none"},
    ]
    config = make_config(architecture=layers)
    sweep_id = add_sweep(engine, [config, make_config(architecture=layers, seed=1)]).id
    with session_scope(engine) as s:
        todo = unfinished_trials(s, sweep_id)
        mark_trials_running(s, [t.id for t in todo], node_ip="127.0.0.1")
    finish(engine, todo[0].id, TrialStatus.succeeded, image_dim=2.7)  # d = 3: identity
    finish(engine, todo[1].id, TrialStatus.succeeded, image_dim=2.0)  # projection
    view = rows(
        engine, f"SELECT trial_id, solution_kind FROM trial_result WHERE sweep_id = {sweep_id}"
    )
    assert [r["solution_kind"] for r in sorted(view, key=lambda r: r["trial_id"])] == [
        "identity",
        "projection",
    ]


def test_epoch_result_equals_the_epochs_export(engine: Engine, seeded: int) -> None:
    for sweep_id in (seeded, 2):
        columns = [c.name for c in export.epoch_columns()]
        with session_scope(engine, readonly=True) as s:
            exported = [r for batch in export.EPOCHS.stream(s, sweep_id) for r in batch]
        view = rows(
            engine,
            f"SELECT {', '.join(columns)} FROM epoch_result WHERE sweep_id = {sweep_id} "
            "ORDER BY trial_id, epoch",
        )
        assert len(view) == len(exported) > 0
        assert [tuple(r.values()) for r in view] == [tuple(r) for r in exported]


def test_every_documented_query_runs_and_agrees_with_the_api(engine: Engine, seeded: int) -> None:
    docs = doc_queries()
    assert set(docs) == {"group_stats", "per_run", "kinds", "curves", "pairs", "wins"}
    results = {name: rows(engine, sql) for name, sql in docs.items()}
    assert all(results.values()), [n for n, r in results.items() if not r]
    by = ["architecture", "algorithm", "learning_rate", "batch_size"]
    with session_scope(engine, readonly=True) as s:
        summary = store_results.summary(s, seeded, by=by, metric="idempotent_error")
        curves = store_curves.epoch_curves(s, seeded, by=by[:2], metric="idempotent_error")
        pairs = store_results.compare_rows(
            s, seeded, a="modified", b="ordinary", metric="idempotent_error"
        )
    expected = {tuple(r.group[f] for f in by): r for r in summary if r.n}
    got = {tuple(r[f] for f in by): r for r in results["group_stats"]}
    assert got.keys() == expected.keys()
    for key, row in got.items():
        want = expected[key]
        assert row["n"] == want.n
        assert math.isclose(row["mean"], want.mean, rel_tol=1e-9)
        assert math.isclose(row["median"], want.median, rel_tol=1e-9)
        if want.std is None:
            assert row["std"] is None
        else:
            assert math.isclose(row["std"], want.std, rel_tol=1e-6)
    assert [(r["architecture"], r["algorithm"], r["epoch"], r["n"]) for r in results["curves"]] == [
        (p.group["architecture"], p.group["algorithm"], p.epoch, p.n) for p in curves
    ]
    for r, p in zip(results["curves"], curves, strict=True):
        assert p.mean is not None and math.isclose(r["mean"], p.mean, rel_tol=1e-9)
    both = [p for p in pairs if p.a_status == p.b_status == TrialStatus.succeeded]
    assert len(results["pairs"]) == len(both) == sum(r["pairs"] for r in results["wins"])


@pytest.mark.postgres
def test_compose_analyst_role_reads_everything_and_writes_nothing(
    fresh_pg_database: tuple[str, str],
) -> None:
    """docker/postgres-init/10-analyst.sh as the postgres image runs it (psql as the
    owner), then the migrations as that owner: the analyst reads the tables and views
    the migrations made afterwards, and every write is refused."""
    admin_url, name = fresh_pg_database
    url = make_url(admin_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        env = {
            **os.environ,
            "PGHOST": url.host or "127.0.0.1",
            "PGPORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "postgres",
            "POSTGRES_DB": name,
            "ANALYST_USER": role,
            "ANALYST_PASSWORD": "read-only-pw",
        }
        done = subprocess.run(
            ["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        owner_url = url.set(database=name).render_as_string(hide_password=False)
        upgrade_database(owner_url)
        owner = create_engine(owner_url, poolclass=NullPool)
        add_sweep(owner, make_grid(seeds=(0,)), name="visible")
        owner.dispose()
        analyst_url = url.set(database=name, username=role, password="read-only-pw")
        analyst = create_engine(analyst_url, poolclass=NullPool)
        try:
            with analyst.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM trial_result")).scalar() == 4
                assert conn.execute(text("SELECT count(*) FROM epoch_result")).scalar() == 0
                assert conn.execute(text("SELECT name FROM sweep")).scalar() == "visible"
            for write in (
                "DELETE FROM trial",
                "UPDATE sweep SET name = 'x'",
                "CREATE TABLE mine (x int)",
            ):
                with analyst.connect() as conn, pytest.raises(DBAPIError, match="read-only"):
                    conn.execute(text(write))
            with analyst.connect() as conn, pytest.raises(DBAPIError, match="permission denied"):
                conn.execute(text("SET default_transaction_read_only = off"))
                conn.execute(text("SET TRANSACTION READ WRITE"))
                conn.execute(text("DELETE FROM trial"))
        finally:
            analyst.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
