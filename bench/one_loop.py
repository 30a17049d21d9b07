"""Is a run alone as a pack of one free? The training step of idemcore's one loop
(a StackedNet of one member, hand-written backward, torch.optim through
StackedOptimizer) against the plain torch loop a researcher writes (nn.Module,
autograd or ``idemcore.modified_loss``, torch.optim.SGD), per architecture.

Both sides do the same work on the same batch: one step per batch over ``m`` samples
(full batch), interleaved over ``--reps`` and the best time kept (the least disturbed
by load from other processes). Prints seconds per step and the ratio pack/plain
measured in this one run; a ratio near 1 (or below) means the pack of one costs nothing.
The per-epoch metrics are the same for every run and are not part of the step.

    .venv/bin/python bench/one_loop.py                 # a few minutes on 2 busy cores
    .venv/bin/python bench/one_loop.py --quick         # seconds
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from idemcore.algorithms import get_algorithm
from idemcore.architectures import resolve_layers
from idemcore.losses import idempotent_loss, modified_loss
from idemcore.nets import build_net
from idemcore.optim import StackedOptimizer
from idemcore.packed_engine import StackedNet, gradients
from idemcore.train import CHUNK_MAX_WIDTH, chunk_size

SMALL = ("N1", "N3", "B1")
LARGE = ("B2", "N4", "B4", "B3")


def best(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Best seconds of each function, interleaved, after one warm-up each."""
    for fn in fns.values():
        fn()
    out = {name: float("inf") for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name] = min(out[name], time.perf_counter() - t0)
    return out


def bench(arch: str, algorithm: str, m: int, reps: int) -> dict[str, float]:
    layers = resolve_layers(arch)
    dim = layers[0].in_features
    x = torch.randn(m, dim, generator=torch.Generator().manual_seed(0))
    lr = 1e-7  # the weights barely move: every repetition costs the same
    net = build_net(arch, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = modified_loss if algorithm == "modified" else idempotent_loss

    def plain() -> None:
        opt.zero_grad()
        loss_fn(net, net(x)).backward()
        opt.step()

    stacked = StackedNet.from_nets([build_net(arch, seed=0)], layers)
    rule = get_algorithm(algorithm)
    stacked_opt = StackedOptimizer("sgd", stacked.params(), [lr])
    xs = x.unsqueeze(0).transpose(1, 2)  # (1, d, m), a view as in the loop
    widest = max(max(layer.in_features, layer.out_features) for layer in layers)
    chunk = chunk_size(1, widest, torch.device("cpu"))

    def pack() -> None:
        with torch.no_grad():
            _, grads = gradients(stacked, rule, xs, chunk)
            stacked_opt.step(grads)

    return best({"plain": plain, "pack": pack}, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10000, help="samples per step, small nets")
    parser.add_argument("--m-large", type=int, default=1000, help="samples per step, N4/B2-B4")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--archs", default=",".join(SMALL + LARGE))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="m=500, 2 reps, small nets")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.m, args.m_large, args.reps, args.archs = 500, 200, 2, ",".join(SMALL)
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, best of "
        f"{args.reps}, load average {load:.1f} (chunked passes up to width {CHUNK_MAX_WIDTH})"
    )
    print(f"{'arch':<5} {'alg':<9} {'m':>6} {'plain s':>9} {'pack s':>9} {'pack/plain':>10}")
    for arch in args.archs.split(","):
        wide = max(layer.out_features for layer in resolve_layers(arch)) > CHUNK_MAX_WIDTH
        m = args.m_large if wide else args.m
        for algorithm in ("modified", "ordinary"):
            t = bench(arch, algorithm, m, args.reps)
            print(
                f"{arch:<5} {algorithm:<9} {m:>6} {t['plain']:>9.5f} {t['pack']:>9.5f} "
                f"{t['pack'] / t['plain']:>10.2f}"
            )


if __name__ == "__main__":
    main()
