"""Store benchmark on SQLite and PostgreSQL: bulk epoch inserts and SQL aggregates.

    .venv/bin/python bench/store.py [--postgres-url URL] [--trials 10000] [--epochs 100]

PostgreSQL is used when --postgres-url or IDEM_TEST_POSTGRES_URL is given (a maintenance
URL; the bench creates and drops its own database). Goals (issue 3): ≥ 50,000 epoch
rows/s inserted; the per-group aggregate over 10,000 trials < 200 ms; the aggregate
over 1,000,000 epoch rows < 2 s.

The dev box is shared and often overloaded, so the run also prints reference figures
measured in the same run: the load average, a fixed CPU task (sorting 1M floats in
Python), a plain SQL scan of the same epoch rows (``count`` and ``sum`` of the metric),
and for PostgreSQL the CPU seconds the server backend and this client spent per
inserted row (read from /proc when the server runs on this machine). Wall-clock goals
are only comparable between runs through these.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from idemcore.config import TrialConfig
from idemcore.train import EpochRecord
from service.store.curves import epoch_curves
from service.store.engine import make_engine, session_scope, upgrade_database
from service.store.epochs import append_epochs
from service.store.models import Trial
from service.store.results import summary
from service.store.status import TrialStatus
from service.store.sweeps import create_sweep
from service.store.trials import unfinished_trials

BY = ["architecture", "algorithm", "learning_rate", "batch_size"]
SCAN_SQL = "SELECT count(idempotent_error), sum(idempotent_error) FROM epoch_metric"


def grid(n_trials: int) -> list[TrialConfig]:
    """n_trials configs: 4 architectures × 2 algorithms × 5 lrs × 5 batch sizes (200
    groups) × as many seeds as needed, seed-major so every group gets trials."""
    seeds = math.ceil(n_trials / 200)
    axes = itertools.product(
        range(seeds),
        ["N1", "N2", "N3", "N4"],
        ["ordinary", "modified"],
        [0.001, 0.005, 0.01, 0.05, 0.1],
        [1, 10, 100, 500, 1000],
    )
    out = [TrialConfig(arch, alg, lr, 1000, bs, 100, seed) for seed, arch, alg, lr, bs in axes]
    return out[:n_trials]


def curve(epochs: int, scale: float) -> list[EpochRecord]:
    """One trial's epoch records; ``scale`` varies between trials so groups have spread."""
    return [
        EpochRecord(
            epoch=e,
            idempotent_error=scale / e,
            loss=2.0 * scale / e,
            norm=1.0,
            trace=2.0,
            update_norm=0.1 / e,
            image_dim=2.0,
            train_idempotent_error=scale / (e + 1),
            seconds=0.001,
        )
        for e in range(1, epochs + 1)
    ]


def cpu_reference() -> float:
    """Seconds to sort 1M floats in Python: a fixed CPU task that shows machine load."""
    rng = random.Random(0)
    xs = [rng.random() for _ in range(1_000_000)]
    t0 = time.perf_counter()
    sorted(xs)
    return time.perf_counter() - t0


def backend_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid``, if /proc shows it."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load avg " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_backend(label: str, url: str, n_trials: int, epochs: int) -> dict[str, float]:
    cpu_ref = cpu_reference()
    upgrade_database(url)
    engine = make_engine(url)
    configs = grid(n_trials)
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        sweep_id = create_sweep(s, name="bench", spec={}, priority=0, trials=configs).id
    create_s = time.perf_counter() - t0
    with session_scope(engine) as s:
        ids = [t.id for t in unfinished_trials(s, sweep_id)]
    curves = [curve(epochs, 1.0 + k / 13) for k in range(13)]  # built before timing
    per_txn = 10  # trials per transaction; one INSERT statement per trial's batch
    pid = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:  # the pooled connection the loop will reuse
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    server0, client0 = backend_cpu_s(pid), time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(ids), per_txn):
        with session_scope(engine) as s:
            for trial_id in ids[i : i + per_txn]:
                append_epochs(s, trial_id, curves[trial_id % 13])
    insert_s = time.perf_counter() - t0
    client_s = time.process_time() - client0
    server1 = backend_cpu_s(pid)
    server_s = None if server0 is None or server1 is None else server1 - server0
    rows = len(ids) * epochs
    with session_scope(engine) as s:
        # Spread final values deterministically so groups have real statistics.
        s.execute(
            update(Trial)
            .where(Trial.sweep_id == sweep_id)
            .values(
                status=TrialStatus.succeeded,
                idempotent_error=(Trial.id % 97) / 97.0,
                epochs_to_threshold=Trial.id % 50,
            )
        )
    if engine.dialect.name == "postgresql":
        # Committed: under engine.connect() the ANALYZE was rolled back with its
        # transaction, leaving the planner estimates from before the status update.
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))

    def scan() -> None:
        with session_scope(engine, readonly=True) as s:
            s.execute(
                text("SELECT count(idempotent_error), sum(idempotent_error) FROM epoch_metric")
            )

    def summary_query() -> None:
        with session_scope(engine, readonly=True) as s:
            summary(s, sweep_id, by=BY, metric="idempotent_error")

    def curves_query() -> None:
        with session_scope(engine, readonly=True) as s:
            points = epoch_curves(s, sweep_id, by=BY, metric="idempotent_error")
        assert len(points) == 200 * epochs or n_trials < 200, len(points)

    scan_s = timed(scan, repeat=3)
    summary_s = timed(summary_query)
    curves_s = timed(curves_query, repeat=3)
    scan_s = min(scan_s, timed(scan, repeat=3))  # once more after, load drifts
    engine.dispose()
    cpu = ""
    if server_s is not None:
        cpu = (
            f" (CPU per row: server {server_s / rows * 1e6:.1f} µs, "
            f"client {client_s / rows * 1e6:.1f} µs)"
        )
    print(
        f"{label:10s} {load()} | reference: sort 1M floats {cpu_ref:.2f} s, "
        f"SQL scan of {rows} epoch rows {scan_s * 1000:.0f} ms\n"
        f"{label:10s} create_sweep({n_trials} trials) {create_s:6.2f} s | "
        f"insert {rows} epoch rows {insert_s:6.2f} s = {rows / insert_s:9,.0f} rows/s{cpu}\n"
        f"{label:10s} summary over {n_trials} trials {summary_s * 1000:7.1f} ms | "
        f"epoch curves over {rows} rows {curves_s:6.2f} s "
        f"({curves_s / scan_s:.1f}× the plain scan)",
        flush=True,
    )
    return {
        "rows_per_s": rows / insert_s,
        "summary_s": summary_s,
        "curves_s": curves_s,
        "scan_s": scan_s,
        "cpu_ref_s": cpu_ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get("IDEM_TEST_POSTGRES_URL"))
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()

    print(f"start: {load()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run_backend(
            "sqlite", f"sqlite:///{tmp}/bench.db", args.trials, args.epochs
        )
    if args.postgres_url:
        name = f"idem_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.postgres_url).set(database=name).render_as_string(False)
            results["postgresql"] = run_backend("postgresql", url, args.trials, args.epochs)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        print("postgresql: skipped (no --postgres-url / IDEM_TEST_POSTGRES_URL)")
    for label, r in results.items():
        print(
            f"{label:10s} goals: insert {r['rows_per_s'] / 50_000:5.2f}× of 50,000 rows/s; "
            f"summary {r['summary_s'] / 0.2:5.2f}× of the 200 ms budget; "
            f"curves {r['curves_s'] / 2.0:5.2f}× of the 2 s budget"
        )
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
