"""A claimer process for the concurrency tests; imports only the store (no torch)."""

from __future__ import annotations

from service.store.claim import claim_sweep
from service.store.engine import make_engine


def claim_all(url: str, worker_id: str) -> list[int]:
    """Claim until the queue is empty; returns the claimed sweep ids in order."""
    engine = make_engine(url)
    got: list[int] = []
    try:
        while (claimed := claim_sweep(engine, worker_id)) is not None:
            got.append(claimed.id)
    finally:
        engine.dispose()
    return got
