"""Run configs the benchmarks share (bench/ is on ``sys.path`` when a bench runs)."""

from __future__ import annotations

from typing import Any

from idemcore.config import TrialConfig

SAMPLES = 10_000  # the note's n: fresh Gaussian samples per epoch
LRS = (0.01, 0.05, 0.1, 0.5)  # the learning rates of the grid


def members(
    count: int,
    epochs: int,
    architecture: str = "N1",
    algorithm: str = "modified",
    batch_size: int = SAMPLES,
    **more: Any,
) -> list[TrialConfig]:
    """``count`` runs that share a pack key: seeds 0..count-1, cycling through ``LRS``,
    ``SAMPLES`` per epoch in batches of ``batch_size`` (one batch by default: the note's
    full-batch setting)."""
    return [
        TrialConfig(
            architecture, algorithm, LRS[i % len(LRS)], SAMPLES, batch_size, epochs, i, **more
        )
        for i in range(count)
    ]
