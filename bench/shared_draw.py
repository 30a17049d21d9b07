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
from configs import LRS, members  # bench/configs.py

from idemcore.config import TrialConfig
from idemcore.train import PackedTraining


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
        # 32 seeds, the rates cycling; 8 seeds, each with every rate (fresh data, full batch).
        distinct = members(32, args.epochs, arch, algorithm)
        shared = [replace(c, seed=c.seed // len(LRS)) for c in distinct]
        t_shared = min(seconds(shared) for _ in range(args.reps))
        t_distinct = min(seconds(distinct) for _ in range(args.reps))
        print(
            f"{arch} {algorithm}: 32 members x {args.epochs} epochs: 32 seeds {t_distinct:.2f} s, "
            f"8 seeds x 4 rates {t_shared:.2f} s, {t_distinct / t_shared:.2f}x"
        )


if __name__ == "__main__":
    main()
