"""Concurrent claimers (threads and processes) never claim the same sweep twice."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest
from sqlalchemy import Engine

from service.store.engine import session_scope
from service.store.sweeps import create_sweep
from tests.service.store._claimer import claim_all
from tests.utils.factories import make_config

SWEEPS = 30
CLAIMERS = 4


def _fill(engine: Engine) -> set[int]:
    with session_scope(engine) as s:
        return {
            create_sweep(s, name=f"s{i}", spec={}, priority=i % 3, trials=[make_config()]).id
            for i in range(SWEEPS)
        }


def _check(expected: set[int], results: list[list[int]]) -> None:
    claims = Counter(i for r in results for i in r)
    assert set(claims) == expected
    assert max(claims.values()) == 1, "a sweep was claimed twice"


def test_threads_never_double_claim(engine: Engine, db_url: str) -> None:
    expected = _fill(engine)
    results: list[list[int]] = [[] for _ in range(CLAIMERS)]
    barrier = threading.Barrier(CLAIMERS)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = claim_all(db_url, f"thread-{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    _check(expected, results)
    assert sum(1 for r in results if r) >= 2, "claimers did not actually overlap"


@pytest.mark.slow
def test_processes_never_double_claim(engine: Engine, db_url: str) -> None:
    expected = _fill(engine)
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(CLAIMERS) as pool:
        results = pool.starmap(claim_all, [(db_url, f"proc-{i}") for i in range(CLAIMERS)])
    _check(expected, results)
