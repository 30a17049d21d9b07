"""The claim: highest priority first, then oldest; a claimed sweep is running."""

from __future__ import annotations

from sqlalchemy import Engine

from service.store import queries
from service.store.claim import claim_sweep, register_worker
from service.store.engine import session_scope
from service.store.status import SweepStatus
from tests.utils.factories import add_sweep, make_config


def _worker(engine: Engine, host: str = "host") -> str:
    with session_scope(engine) as s:
        return register_worker(s, host)


def test_claim_takes_highest_priority_then_oldest(engine: Engine) -> None:
    low = add_sweep(engine, [make_config()], priority=0)
    high_old = add_sweep(engine, [make_config()], priority=5)
    high_new = add_sweep(engine, [make_config()], priority=5)
    w = _worker(engine)
    order = [claim_sweep(engine, w) for _ in range(4)]
    assert [c.id if c else None for c in order] == [high_old.id, high_new.id, low.id, None]
    first = order[0]
    assert first is not None and first.spec == {"configs": 1} and first.name == "test sweep"
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, high_old.id)
    assert sweep.status == SweepStatus.running and sweep.claimed_by == w
    assert sweep.heartbeat_at is not None and sweep.started_at is not None
