"""One pack whose seeds repeat across learning rates against one whose seeds are distinct.

Both packs have 32 members and the same work per member; the only difference is how many
fresh-data draws an epoch makes (8 shared streams vs 32, `idemcore.train.fresh_draw_groups`).
Prints the ratio measured in this one run (best of ``--reps``), per network.

    .venv/bin/python bench/shared_draw.py [--epochs 30] [--reps 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from idemcore.config import TrialConfig
from idemcore.train import PackedTraining

RATES = (0.01, 0.05, 0.1, 0.5)


def seconds(configs: list[TrialConfig]) -> float:
    start = time.perf_counter()
    for _ in PackedTraining(configs).epochs():
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for arch, algorithm in (("N1", "modified"), ("N3", "ordinary")):
        base = TrialConfig(
            architecture=arch,
            algorithm=algorithm,
            learning_rate=0.01,
            samples=10000,
            batch_size=10000,
            epochs=args.epochs,
            seed=0,
            data="gaussian-fresh",
            dtype="float32",
        )
        shared = [replace(base, seed=s, learning_rate=lr) for s in range(8) for lr in RATES]
        distinct = [replace(base, seed=s, learning_rate=RATES[s % 4]) for s in range(32)]
        t_shared = min(seconds(shared) for _ in range(args.reps))
        t_distinct = min(seconds(distinct) for _ in range(args.reps))
        print(
            f"{arch} {algorithm}: 32 members x {args.epochs} epochs: 32 seeds {t_distinct:.2f} s, "
            f"8 seeds x 4 rates {t_shared:.2f} s, {t_distinct / t_shared:.2f}x"
        )


if __name__ == "__main__":
    main()
