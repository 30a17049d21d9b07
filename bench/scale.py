"""Sweeps of 1,000 / 10,000 / 100,000 trials through the real service, stage by stage.

For each size: a fresh SQLite store, ``idem api`` and ``idem worker`` as subprocesses,
then one N1 sweep (modified and ordinary × 5 learning rates × seeds, 1 epoch by default,
so training is not the subject). Printed per size, as seconds and microseconds per trial:

- POST: validation, grid expansion and the bulk insert (``POST /sweeps``);
- claim+group: the worker's claim, its read of the trials and the packing into Tune
  trials (from the worker log's timestamps, and the Ray Job driver's log when the worker
  submits one: then it includes the job's start; the Tune trial count is shown);
- run: POST answered -> every trial in a final state (polled every 0.5 s);
- summary, compare, claims (when the API has it), report (through 202 until 200),
  export (CSV when the API has it, else JSON pages by ``after_id``);
- peak memory (VmHWM) of the API process and of the Tune driver: the worker, or the
  sweep's Ray Job driver when the worker submits one (sampled every 0.5 s; the queue
  worker's own peak is then ``queue_worker_mb`` in the JSON).

Also checks that no p-value in compare/claims is NaN or infinite.

    .venv/bin/python bench/scale.py                     # 1000 10000 100000
    .venv/bin/python bench/scale.py --sizes 1000 10000 --epochs 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_throughput_service import REPO, _idem, _stop, _wait_up, start_api

STAGES = ("post", "claim+group", "run", "summary", "compare", "claims", "report", "export")
FINAL = {"succeeded", "failed", "cancelled"}
LEARNING_RATES = [0.01, 0.02, 0.05, 0.1, 0.2]


def spec_for(trials: int, epochs: int) -> dict[str, Any]:
    """N1, 2 algorithms × 5 learning rates × trials/10 seeds."""
    assert trials % 10 == 0
    return {
        "name": f"scale-{trials}",
        "architectures": ["N1"],
        "algorithms": ["modified", "ordinary"],
        "learning_rates": LEARNING_RATES,
        "batches": [{"samples": 20, "batch_size": 20}],
        "seeds": trials // 10,
        "epochs": epochs,
        "eval_samples": 50,
        "threshold": 1e-3,
    }


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM) in MB, None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


class JobDriver:
    """The Ray Job that runs a sweep's Tune experiment when the worker submits one (the
    worker logs ``sweep N: submitted Ray Job ID``; the driver logs its pid into Ray's
    ``job-driver-ID.log``): its log, and its peak memory sampled while it runs (VmHWM
    only grows, so the last sample before it exits is its peak within one poll)."""

    def __init__(self, worker_log: Path, sweep_id: int) -> None:
        self.worker_log = worker_log
        self.sweep_id = sweep_id
        self.peak_mb: float | None = None
        self._log: Path | None = None
        self._pid: int | None = None

    def log_path(self) -> Path | None:
        if self._log is None:
            text = self.worker_log.read_text(errors="replace")
            m = re.search(rf"sweep {self.sweep_id}: submitted Ray Job (\S+)", text)
            if m:
                ray_tmp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
                found = sorted(ray_tmp.glob(f"session_*/logs/job-driver-{m.group(1)}.log"))
                self._log = found[0] if found else None
        return self._log

    def wait_ended(self, timeout_s: float = 60) -> None:
        """Until the worker logs that the job ended (it does after the sweep is final)."""
        deadline = time.monotonic() + timeout_s
        pattern = rf"sweep {self.sweep_id}: Ray Job \S+ ended"
        while time.monotonic() < deadline:
            if re.search(pattern, self.worker_log.read_text(errors="replace")):
                return
            time.sleep(0.2)

    def sample(self) -> None:
        if self._pid is None and (path := self.log_path()) is not None:
            m = re.search(
                rf"sweep {self.sweep_id}: driver pid (\d+)", path.read_text("utf-8", "replace")
            )
            self._pid = int(m.group(1)) if m else None
        if self._pid is not None and (mb := peak_rss_mb(self._pid)) is not None:
            self.peak_mb = mb


def claim_and_group(worker_log: str, sweep_id: int) -> tuple[float | None, int | None]:
    """Seconds from the worker's 'claimed' line to its 'Tune trials' line, and the count."""
    claimed = grouped = None
    tune_trials = None
    for line in worker_log.splitlines():
        if f"sweep {sweep_id} (" in line and "claimed" in line:
            claimed = log_time(line)
        m = re.search(rf"sweep {sweep_id}: \d+ store trials in (\d+) Tune trials", line)
        if m:
            grouped = log_time(line)
            tune_trials = int(m.group(1))
    if claimed is None or grouped is None:
        return None, tune_trials
    return (grouped - claimed).total_seconds(), tune_trials


def finite_p_values(body: Any) -> tuple[int, int]:
    """(p-values seen, p-values NaN or infinite) anywhere in a JSON body."""
    seen = bad = 0
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k in ("p", "p_value", "p_corrected") and v is not None:
                    seen += 1
                    bad += not math.isfinite(float(v))
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return seen, bad


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_size(
    trials: int,
    epochs: int,
    timeout_s: float,
    synthetic: bool = False,
    keep: Path | None = None,
    postgres: str | None = None,
    ray_jobs: bool = False,
) -> dict[str, Any]:
    """One fresh service, one sweep of ``trials``: every stage's seconds and the peaks.
    ``synthetic``: no worker; :func:`fill_results` stores the results instead (the
    read stages measured on a sweep too large to train on this machine in time).
    ``keep``: the store (or the PostgreSQL database) and the logs stay, the logs (and a
    SQLite store) in ``keep/<trials>``. ``postgres``: an admin URL of a PostgreSQL
    server; the store is a new database on it (dropped afterwards unless ``keep``).
    ``ray_jobs``: the worker runs the sweep as a Ray Job (else inside the worker)."""
    out: dict[str, Any] = {"trials": trials, "synthetic": synthetic, "load": os.getloadavg()[0]}
    database_url = None
    if postgres is not None:
        database_url = fresh_database(postgres, f"idem_scale_{trials}_{os.getpid()}")
        out["database"] = make_url(database_url).database
    if keep is not None:
        (keep / str(trials)).mkdir(parents=True, exist_ok=False)
    with (
        contextlib.nullcontext(str(keep / str(trials)))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="idem-scale-")
    ) as tmp:
        data_dir = Path(tmp)
        port, env, api, api_log = start_api(data_dir, database_url)
        # One mode for every size: the worker falls back to running in process when
        # another Ray on the machine holds the Jobs agent's port, which varies here.
        env["IDEM_RAY_JOBS"] = "true" if ray_jobs else "false"
        out["ray_jobs"] = ray_jobs
        worker_log = open(data_dir / "worker.log", "wb")  # noqa: SIM115 (closed below)
        worker = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(1e6)"]
            if synthetic
            else _idem("worker"),
            env=env,
            cwd=REPO,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        if synthetic:
            worker_log.write(b"store (synthetic: no worker)\n")
            worker_log.flush()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                _wait_up(client, api, worker, data_dir)
                seconds, r = timed(lambda: client.post("/sweeps", json=spec_for(trials, epochs)))
                r.raise_for_status()
                sweep_id = r.json()["id"]
                assert r.json()["trial_count"] == trials, r.json()
                out["post"] = seconds
                if synthetic:
                    db_url = database_url or f"sqlite:///{data_dir / 'idem.db'}"
                    out["claim+group"], out["tune_trials"] = fill_results(db_url, sweep_id)
                t0 = time.perf_counter()
                deadline = t0 + timeout_s
                driver = JobDriver(data_dir / "worker.log", sweep_id)
                while True:
                    sweep = client.get(f"/sweeps/{sweep_id}").json()
                    if sweep["status"] in FINAL:
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"sweep {sweep_id} unfinished after {timeout_s} s")
                    if worker.poll() is not None:
                        raise RuntimeError("the worker exited")
                    driver.sample()
                    time.sleep(0.5)
                out["run"] = None if synthetic else time.perf_counter() - t0
                out["status"] = sweep["trials_by_status"]
                out["worker_mb"] = None if synthetic else peak_rss_mb(worker.pid)
                if not synthetic:
                    log = (data_dir / "worker.log").read_text(errors="replace")
                    if driver.log_path() is not None:  # Ray Jobs: the driver ran the Tune run
                        driver.wait_ended()  # its teardown would be timed with the reads
                        out["queue_worker_mb"] = out["worker_mb"]
                        out["worker_mb"] = driver.peak_mb
                        log += driver.log_path().read_text(errors="replace")  # type: ignore[union-attr]
                    out["claim+group"], out["tune_trials"] = claim_and_group(log, sweep_id)
                out["summary"], r = timed(lambda: client.get(f"/sweeps/{sweep_id}/summary"))
                r.raise_for_status()
                p_seen = p_bad = 0
                out["compare"], r = timed(lambda: client.get(f"/sweeps/{sweep_id}/compare"))
                r.raise_for_status()
                seen, bad = finite_p_values(r.json())
                p_seen, p_bad = p_seen + seen, p_bad + bad
                out["claims"], r = timed(lambda: client.get(f"/sweeps/{sweep_id}/claims"))
                if r.status_code == 200:
                    seen, bad = finite_p_values(r.json())
                    p_seen, p_bad = p_seen + seen, p_bad + bad
                else:
                    out["claims"] = None  # the API has no /claims (yet)
                out["p_values"], out["p_bad"] = p_seen, p_bad

                def report() -> httpx.Response:
                    while (page := client.get(f"/sweeps/{sweep_id}/report")).status_code == 202:
                        time.sleep(float(page.headers.get("retry-after", "1")) / 4)
                    return page

                out["report"], r = timed(report)
                r.raise_for_status()
                out["export"], out["export_kind"] = export(client, sweep_id, trials)
                out["api_mb"] = peak_rss_mb(api.pid)
                if not synthetic and "queue_worker_mb" not in out:
                    out["worker_mb"] = peak_rss_mb(worker.pid) or out["worker_mb"]
                out["load_end"] = os.getloadavg()[0]
        finally:
            print("   stages so far: " + json.dumps(out), flush=True)
            if api.poll() is not None:  # the API died: show why
                print((data_dir / "api.log").read_text(errors="replace")[-2000:], flush=True)
            _stop(worker, "worker")
            _stop(api, "api")
            api_log.close()
            worker_log.close()
            if postgres is not None and keep is None:
                drop_database(postgres, out["database"])
    return out


def fresh_database(admin_url: str, name: str) -> str:
    """Create the empty PostgreSQL database ``name``; its URL (the API migrates it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop the database ``name`` (what :func:`fresh_database` made)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fill_results(db_url: str, sweep_id: int) -> tuple[float, int]:
    """Stand in for the worker at a size too slow to train here: group the sweep's
    trials as the worker would (timed; returns the Tune trial count), then store seeded
    random final states and one epoch row per trial, and finish the sweep."""
    import numpy as np
    from sqlalchemy import insert, update

    from service.store.engine import make_engine, session_scope
    from service.store.models import EpochMetric, Sweep, Trial, utcnow
    from service.store.status import SweepStatus, TrialStatus
    from service.store.trials import unfinished_trials
    from workers.tune_runner import make_groups

    engine = make_engine(db_url)
    try:
        t0 = time.perf_counter()
        with session_scope(engine) as session:
            todos = unfinished_trials(session, sweep_id)
        groups = make_groups(todos, None)
        grouping = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        n = len(todos)
        err = 10 ** rng.uniform(-8, 0, n)
        dims = rng.uniform(0, 5, n)
        now = utcnow()
        rows = [
            {
                "id": t.id,
                "status": TrialStatus.succeeded,
                "idempotent_error": float(err[i]),
                "loss": float(err[i]),
                "norm": 1.0,
                "trace": float(dims[i]),
                "update_norm": float(err[i]) / 10,
                "image_dim": float(dims[i]),
                "epochs_to_threshold": 1 if err[i] < 1e-3 else None,
                "epochs_run": 1,
                "wall_seconds": 0.01,
                "started_at": now,
                "finished_at": now,
            }
            for i, t in enumerate(todos)
        ]
        epochs = [
            {
                "trial_id": r["id"],
                "epoch": 1,
                "idempotent_error": r["idempotent_error"],
                "update_norm": r["update_norm"],
                "image_dim": r["image_dim"],
            }
            for r in rows
        ]
        with session_scope(engine) as session:
            session.execute(update(Trial), rows)
            session.execute(insert(EpochMetric), epochs)
            session.execute(
                update(Sweep)
                .where(Sweep.id == sweep_id)
                .values(status=SweepStatus.succeeded, started_at=now, finished_at=now)
            )
        return grouping, len(groups)
    finally:
        engine.dispose()


def export(client: httpx.Client, sweep_id: int, trials: int) -> tuple[float, str]:
    """The whole trials table: CSV export when the API has one, else JSON by cursor."""
    t0 = time.perf_counter()
    r = client.get(f"/sweeps/{sweep_id}/trials", params={"format": "csv"})
    if r.status_code == 200 and r.headers["content-type"].startswith("text/csv"):
        rows = r.text.count("\n") - 1
        assert rows >= trials, rows
        return time.perf_counter() - t0, "csv"
    t0 = time.perf_counter()
    seen, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 10000}
        if cursor is not None:
            params["after_id"] = cursor
        page = client.get(f"/sweeps/{sweep_id}/trials", params=params).json()
        seen += len(page["data"])
        cursor = page.get("next_after_id")
        if cursor is None:
            break
    assert seen == trials, (seen, trials)
    return time.perf_counter() - t0, "json pages"


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: seconds (µs per trial) per stage, then memory."""
    head = "| trials | Tune trials | " + " | ".join(STAGES) + " | API MB | worker MB |"
    lines = [head, "|" + "---:|" * (len(STAGES) + 4)]
    for r in results:
        cells = []
        for stage in STAGES:
            v = r.get(stage)
            cells.append("–" if v is None else f"{v:.2f} s ({v / r['trials'] * 1e6:,.0f} µs)")
        mem = [f"{r[k]:,.0f}" if r.get(k) else "–" for k in ("api_mb", "worker_mb")]
        lines.append(
            f"| {r['trials']:,}{' (synthetic)' if r.get('synthetic') else ''} | "
            f"{r.get('tune_trials') or '–'} | " + " | ".join(cells) + f" | {mem[0]} | {mem[1]} |"
        )
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> str:
    """Time per trial of the largest size over the smallest, per stage (goal: ≤ 2)."""
    small, large = results[0], results[-1]
    parts = []
    for stage in STAGES:
        a, b = small.get(stage), large.get(stage)
        if a and b:
            parts.append(f"{stage} {(b / large['trials']) / (a / small['trials']):.2f}×")
    return f"per-trial time at {large['trials']:,} over {small['trials']:,}: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600, help="per sweep run, seconds")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--synthetic",
        type=int,
        nargs="*",
        default=[],
        help="sizes whose results are stored by fill_results instead of trained",
    )
    parser.add_argument("--keep", type=Path, help="keep each size's store and logs under KEEP/N")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="store each size in a new database on this PostgreSQL server (default: SQLite)",
    )
    parser.add_argument(
        "--ray-jobs",
        action="store_true",
        help="the worker submits each sweep as a Ray Job (default: the Tune run in the worker)",
    )
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        print(f"== {n:,} trials, {args.epochs} epoch(s)", flush=True)
        result = run_size(
            n,
            args.epochs,
            args.timeout,
            synthetic=n in args.synthetic,
            keep=args.keep,
            postgres=args.postgres,
            ray_jobs=args.ray_jobs,
        )
        print("   " + json.dumps(result), flush=True)
        results.append(result)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    print(table(results))
    if len(results) > 1:
        print(ratios(results))
    bad = sum(r["p_bad"] for r in results)
    seen = sum(r["p_values"] for r in results)
    print(f"p-values: {seen} seen, {bad} NaN or infinite")


if __name__ == "__main__":
    main()
