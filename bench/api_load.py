"""Load on `idem api` over PostgreSQL: concurrent clients submitting and querying.

Starts a throwaway PostgreSQL (scripts/pg.sh) unless ``--database-url`` is given, migrates
it, starts `idem api` as a process, and runs ``--clients`` asyncio clients for
``--seconds``. Each client loops: submit a small sweep (with an Idempotency-Key), read it,
list sweeps, list its trials, read the summary of a sweep with results, read one trial and
its epochs. Afterwards it checks that every 201 is in the store (the returned id exists
with the returned trial count) and prints p50/p95/p99 latency per route, requests per
second, and any non-2xx answers (there must be none).

    .venv/bin/python bench/api_load.py --clients 50 --seconds 60
    .venv/bin/python bench/api_load.py --clients 50 --seconds 60 --api-workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from idemsweep.commands.up import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.utils.factories import SMALL_SPEC as SPEC  # noqa: E402  (4 small N1 trials)


def start_postgres() -> tuple[str, str]:
    """(URL, cluster dir) of a throwaway PostgreSQL from scripts/pg.sh."""
    out = subprocess.run(
        [
            "bash",
            "-c",
            'source scripts/pg.sh && pg_start >/dev/null && echo "$PG_DIR $IDEM_TEST_POSTGRES_URL"',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[1], out[0]


def stop_postgres(directory: str) -> None:
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    subprocess.run(
        [*as_pg, str(bindir / "pg_ctl"), "-D", f"{directory}/data", "-m", "immediate", "stop"],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(directory, ignore_errors=True)


def seed_results(url: str) -> int:
    """A sweep whose trials all succeeded (so summary/trial/epoch reads return rows)."""
    from service.store.claim import claim_sweep, register_worker
    from service.store.engine import make_engine, session_scope
    from tests.utils.factories import add_sweep, make_grid, run_sweep_to_end

    engine = make_engine(url)
    try:
        sweep_id = add_sweep(engine, make_grid(seeds=tuple(range(10))), name="seed").id
        with session_scope(engine) as s:
            worker = register_worker(s, "bench")
        claim_sweep(engine, worker)
        run_sweep_to_end(engine, sweep_id, worker, epochs=50)
        return int(sweep_id)
    finally:
        engine.dispose()


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.created: dict[int, int] = {}

    async def call(
        self, client: httpx.AsyncClient, route: str, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.errors.append(f"{route}: {type(exc).__name__}: {exc}")
            return None
        self.latency[route].append(time.perf_counter() - started)
        if r.status_code >= 300:
            self.errors.append(f"{route}: {r.status_code} {r.text[:200]}")
        return r


async def client_loop(base: str, deadline: float, stats: Stats, seeded: int, n: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            spec = {**SPEC, "name": f"load-{n}-{i}"}
            key = uuid.uuid4().hex
            r = await stats.call(
                client,
                "POST /sweeps",
                "POST",
                "/sweeps",
                json=spec,
                headers={"Idempotency-Key": key},
            )
            if r is not None and r.status_code == 201:
                body = r.json()
                stats.created[body["id"]] = body["trial_count"]
                await stats.call(client, "GET /sweeps/{id}", "GET", f"/sweeps/{body['id']}")
            await stats.call(client, "GET /sweeps", "GET", "/sweeps", params={"limit": 20})
            await stats.call(
                client,
                "GET /sweeps/{id}/trials",
                "GET",
                f"/sweeps/{seeded}/trials",
                params={"algorithm": "modified", "limit": 50},
            )
            await stats.call(
                client,
                "GET /sweeps/{id}/summary",
                "GET",
                f"/sweeps/{seeded}/summary",
                params={"by": "algorithm,learning_rate", "metric": "idempotent_error"},
            )
            trial_id = 1 + (i % 40)
            await stats.call(client, "GET /trials/{id}", "GET", f"/trials/{trial_id}")
            await stats.call(
                client,
                "GET /trials/{id}/epochs",
                "GET",
                f"/trials/{trial_id}/epochs",
                params={"stride": 5},
            )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def verify(url: str, created: dict[int, int]) -> list[str]:
    """Every 201 is in the store with the trial count it announced."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows: dict[int, int] = dict(
                conn.execute(
                    text(
                        "SELECT s.id, count(t.id) FROM sweep s JOIN trial t ON t.sweep_id = s.id"
                        " GROUP BY s.id"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return [
        f"sweep {i}: stored {rows.get(i)} trials, answered {n}"
        for i, n in created.items()
        if rows.get(i) != n
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database-url", default=None, help="default: a throwaway PostgreSQL")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="`idem api --workers N` (default 1)"
    )
    args = parser.parse_args()

    from service.store.engine import upgrade_database

    cluster = None
    url = args.database_url
    if url is None:
        url, cluster = start_postgres()
    data_dir = Path(tempfile.mkdtemp(prefix="idem-load-"))
    api = None
    try:
        upgrade_database(url)
        seeded = seed_results(url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
        env.update(IDEM_DATABASE_URL=url, IDEM_DATA_DIR=str(data_dir))
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idemsweep",
                "api",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--workers",
                str(args.api_workers),
            ],
            cwd=REPO,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        stats = Stats()
        started = time.monotonic()
        deadline = started + args.seconds

        async def run_all() -> None:
            await asyncio.gather(
                *(client_loop(base, deadline, stats, seeded, n) for n in range(args.clients))
            )

        asyncio.run(run_all())
        wall = time.monotonic() - started
        lost = verify(url, stats.created)
        total = sum(len(v) for v in stats.latency.values())
        print(
            f"{args.clients} clients, {args.api_workers} API process(es), {wall:.1f} s,"
            f" {total} requests, {total / wall:.0f} req/s,"
            f" {len(stats.created)} sweeps created, {len(stats.errors)} errors,"
            f" {len(lost)} lost submissions"
        )
        print(f"{'route':28} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for route, values in stats.latency.items():
            print(
                f"{route:28} {len(values):6d} {pct(values, 0.5):8.1f} {pct(values, 0.95):8.1f}"
                f" {pct(values, 0.99):8.1f}"
            )
        every = [v for values in stats.latency.values() for v in values]
        print(f"median of all requests: {statistics.median(every) * 1000:.1f} ms")
        for line in (stats.errors + lost)[:20]:
            print("  " + line)
        return 1 if stats.errors or lost else 0
    finally:
        if api is not None:
            api.terminate()
            api.wait(30)
        if cluster:
            stop_postgres(cluster)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
