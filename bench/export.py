"""Peak memory of the API while it streams a million-row epoch table as CSV and Parquet.

    .venv/bin/python bench/export.py [--postgres-url URL] [--trials 1000] [--epochs 1000]

Fills a sweep with ``trials × epochs`` synthetic epoch rows through the store's bulk
insert (``append_epochs``), plus a sweep a tenth that size, then for each size and
format starts a fresh ``idem api`` process, downloads ``GET /sweeps/{id}/epochs?format=…``
to /dev/null and reads the server's peak resident memory (``VmHWM`` in /proc) before
(after an empty export in that format, so its libraries are loaded) and after. Flat
memory means the peak does not grow with the row count. PostgreSQL is used when
--postgres-url or IDEM_TEST_POSTGRES_URL is given (a maintenance URL; the bench makes and
drops its own database); SQLite otherwise (a temporary file).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from store import curve  # bench/store.py (bench/ is on sys.path)

from idemcore.config import TrialConfig
from service.store.engine import make_engine, session_scope, upgrade_database
from service.store.epochs import append_epochs
from service.store.models import Trial
from service.store.status import TrialStatus
from service.store.sweeps import create_sweep
from service.store.trials import unfinished_trials

FORMATS = ("csv", "parquet")


def fill(url: str, name: str, trials: int, epochs: int) -> int:
    """A sweep of ``trials`` succeeded trials with ``epochs`` rows each; its id."""
    engine = make_engine(url)
    try:
        configs = [TrialConfig("N1", "modified", 0.05, 100, 100, epochs, s) for s in range(trials)]
        with session_scope(engine) as s:
            sweep_id = create_sweep(s, name=name, spec={}, priority=0, trials=configs).id
            ids = [t.id for t in unfinished_trials(s, sweep_id)]
        for i in range(0, len(ids), 20):
            with session_scope(engine) as s:
                for trial_id in ids[i : i + 20]:
                    append_epochs(s, trial_id, curve(epochs, 1.0 + trial_id % 13 / 13))
        with session_scope(engine) as s:
            s.execute(
                update(Trial).where(Trial.sweep_id == sweep_id).values(status=TrialStatus.succeeded)
            )
        return sweep_id
    finally:
        engine.dispose()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(url: str, data_dir: Path, sweep_id: int, fmt: str) -> dict[str, float]:
    """A fresh API process streams the sweep's epochs as ``fmt``: its peak RSS before the
    export (after one small request) and after, the bytes and the seconds."""
    port = free_port()
    env = {**os.environ, "IDEM_DATABASE_URL": url, "IDEM_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "idemsweep", "api", "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/sweeps/{sweep_id}", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("idem api did not start") from None
                time.sleep(0.2)
        # Warm up: an empty export in the same format loads its libraries (pyarrow is
        # ~90 MiB), so the growth below is the streaming itself.
        empty = {"format": fmt, "seed": -1}
        httpx.get(f"{base}/sweeps/{sweep_id}/epochs", params=empty, timeout=60).raise_for_status()
        before = peak_rss_mib(proc.pid)
        size = 0
        t0 = time.perf_counter()
        params = {"format": fmt}
        with httpx.stream(
            "GET", f"{base}/sweeps/{sweep_id}/epochs", params=params, timeout=600
        ) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                size += len(chunk)
        seconds = time.perf_counter() - t0
        return {"before": before, "after": peak_rss_mib(proc.pid), "mb": size / 1e6, "s": seconds}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(url: str, data_dir: Path, trials: int, epochs: int) -> None:
    upgrade_database(url)
    small = max(trials // 10, 1)
    t0 = time.perf_counter()
    sweeps = {small * epochs: fill(url, "small", small, epochs)}
    sweeps[trials * epochs] = fill(url, "large", trials, epochs)
    print(f"filled {sum(sweeps)} epoch rows in {time.perf_counter() - t0:.0f} s")
    print(f"{'rows':>9} {'format':>8} {'MB':>7} {'s':>6} {'rows/s':>8} {'RSS before':>11} "
          f"{'peak RSS':>9} {'growth':>7}")  # fmt: skip
    for rows, sweep_id in sorted(sweeps.items()):
        for fmt in FORMATS:
            m = measure(url, data_dir, sweep_id, fmt)
            print(
                f"{rows:>9} {fmt:>8} {m['mb']:>7.1f} {m['s']:>6.1f} {rows / m['s']:>8.0f} "
                f"{m['before']:>9.0f} M {m['after']:>7.0f} M {m['after'] - m['before']:>5.0f} M"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get("IDEM_TEST_POSTGRES_URL"))
    parser.add_argument("--sqlite", action="store_true", help="SQLite even if a URL is set")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1000)
    args = parser.parse_args()
    print(f"load avg {' '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine)")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if args.postgres_url and not args.sqlite:
            name = f"idem_bench_export_{uuid.uuid4().hex[:8]}"
            admin = create_engine(
                args.postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
            )
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(args.postgres_url).set(database=name).render_as_string(False)
                print("postgresql")
                run(url, data_dir, args.trials, args.epochs)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        else:
            print("sqlite")
            run(f"sqlite:///{data_dir / 'idem.db'}", data_dir, args.trials, args.epochs)


if __name__ == "__main__":
    main()
