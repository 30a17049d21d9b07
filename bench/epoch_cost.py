"""Cost of one training epoch: `modified` against `ordinary`, and against the CPU's peak.

For N3, B2, N4, B4 and B3 this times one full-batch epoch (one SGD step on m rows; m =
10000 unless --m-small applies to N4 and B3) of each algorithm and prints seconds per
epoch, the ratio modified/ordinary, matmul FLOPs per epoch, achieved GFLOP/s and that as
a fraction of a float32 matmul peak measured in this same run (the best of several large
square products, re-measured before every architecture, so load from other processes
lowers both alike).

The step is the training loop's own (a pack of one: idemcore.packed_engine's
hand-written backward); bench/one_loop.py compares it with the plain torch loop.
FLOPs count the matrix products only (2·rows·in·out per layer pass). With F one forward
pass of n and f1 its first layer: ordinary = 6F - f1 (two forwards, two backwards of
weights and inputs, no input gradient at x); modified = 5F - f1 (three forwards, one
backward). 5/6 = 0.83 is the floor of the time ratio. The per-epoch metrics are the same
for both algorithms and are timed separately (column `metrics_s`).

    .venv/bin/python bench/epoch_cost.py            # about 3-5 minutes on 2 cores
    .venv/bin/python bench/epoch_cost.py --quick    # smoke test, seconds
    .venv/bin/python bench/epoch_cost.py --device cuda --archs B3,B4,N4   # on a GPU

On CUDA every timing waits for the GPU (``torch.cuda.synchronize``), TF32 is off (IEEE
float32, as trials run unless a spec sets ``tf32: true``) and the peak is the GPU's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from idemcore.algorithms import get_algorithm
from idemcore.architectures import is_activation_free, resolve_layers
from idemcore.data import STREAM_TRAIN, generator
from idemcore.metrics import EXACT_JACOBIAN_MAX_DIM, IMAGE_DIM_POINTS, hutchinson_probes
from idemcore.nets import build_net
from idemcore.packed_engine import (
    StackedNet,
    gradients,
    idempotent_error,
    identity_image,
    image_dim,
)
from idemcore.provenance import apply_numerics, device_name

ARCHS = ("N3", "B2", "N4", "B4", "B3")
PEAK_GOAL_ARCHS = ("N4", "B4", "B3")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], reps: int, device: str | torch.device = "cpu") -> float:
    """The fastest of ``reps`` runs after one warm-up (the least disturbed by load)."""
    dev = torch.device(device)
    fn()
    _sync(dev)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int, reps: int, device: str | torch.device = "cpu") -> float:
    """float32 GFLOP/s of an n x n by n x n product on ``device``, best of ``reps``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    seconds = best_time(lambda: torch.mm(a, b, out=out), reps, device)
    return 2 * n**3 / seconds / 1e9


def matmul_flops(arch: str, rows: int) -> tuple[int, int]:
    """(F, f1): matmul FLOPs of one forward pass of n on ``rows`` rows, and its first layer."""
    layers = resolve_layers(arch)
    per_row = [2 * layer.in_features * layer.out_features for layer in layers]
    return rows * sum(per_row), rows * per_row[0]


def epoch_flops(arch: str, rows: int) -> dict[str, int]:
    """Matmul FLOPs of one full-batch epoch of each algorithm (see the module docstring)."""
    f, f1 = matmul_flops(arch, rows)
    return {"modified": 5 * f - f1, "ordinary": 6 * f - f1}


def bench_arch(
    arch: str, m: int, reps: int, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Best seconds per epoch of each algorithm (interleaved), plus the metrics' cost:
    the training loop's own step (a pack of one) and its per-epoch metrics."""
    dev = torch.device(device)
    layers = resolve_layers(arch)
    dim = layers[0].in_features
    x = torch.randn(m, dim, generator=generator(0, STREAM_TRAIN)).T.unsqueeze(0)  # (1, d, m)
    x = x.contiguous().to(dev)
    lr = 1e-6  # small: the weights barely move, so every repetition costs the same
    nets = {
        name: StackedNet.from_nets([build_net(arch, seed=0).to(dev)], layers)
        for name in ("modified", "ordinary")
    }

    def step(name: str) -> None:
        with torch.no_grad():
            _, grads = gradients(nets[name], get_algorithm(name), x)
            for p, g in zip(nets[name].params(), grads, strict=True):
                if g is not None:
                    p.sub_(g, alpha=lr)

    best = {name: float("inf") for name in nets}
    for name in nets:  # warm-up (allocator, thread pool)
        step(name)
    _sync(dev)
    for _ in range(reps):
        for name in nets:
            t0 = time.perf_counter()
            step(name)
            _sync(dev)
            best[name] = min(best[name], time.perf_counter() - t0)
    x_eval = torch.randn(1000, dim, generator=generator(0, 2)).T.unsqueeze(0).contiguous()
    x_eval = x_eval.to(dev)
    free = is_activation_free(arch)
    probes = None
    if not free and dim > EXACT_JACOBIAN_MAX_DIM:
        probes = hutchinson_probes(0, IMAGE_DIM_POINTS, dim, torch.float32, dev).unsqueeze(0)
    net = nets["modified"]

    def metrics() -> None:
        identity_image(net, dim)
        idempotent_error(net, x_eval)
        image_dim(net, x_eval, probes, free)

    best["metrics"] = best_time(metrics, max(1, reps // 2), dev)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10000, help="rows per epoch (full batch)")
    parser.add_argument(
        "--m-small", type=int, default=10000, help="rows for N4 and B3 (the issue allows less)"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed epochs per algorithm")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--peak-n", type=int, default=2048, help="size of the peak matmul")
    parser.add_argument("--quick", action="store_true", help="m=500, 1 rep: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.quick:
        args.m, args.m_small, args.reps = 500, 500, 1
    device = torch.device(args.device)
    apply_numerics(tf32=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    where = device_name(device) if device.type == "cuda" else f"{threads} threads"
    print(f"torch {torch.__version__}, {where}, float32, best of {args.reps} epochs")
    peaks = [matmul_peak(args.peak_n, 5, device)]
    header = (
        f"{'arch':<5} {'m':>6} {'alg':<9} {'s/epoch':>9} {'ratio':>6} {'GFLOP':>8} "
        f"{'GFLOP/s':>8} {'peak':>6} {'metrics_s':>9}"
    )
    print(header)
    rows = []
    for arch in args.archs.split(","):
        m = args.m_small if arch in ("N4", "B3") else args.m
        peaks.append(matmul_peak(args.peak_n, 5, device))
        times = bench_arch(arch, m, args.reps, device)
        flops = epoch_flops(arch, m)
        ratio = times["modified"] / times["ordinary"]
        peak = max(peaks)
        for alg in ("modified", "ordinary"):
            rate = flops[alg] / times[alg] / 1e9
            rows.append((arch, alg, ratio, rate / peak))
            print(
                f"{arch:<5} {m:>6} {alg:<9} {times[alg]:>9.4f} "
                f"{ratio if alg == 'modified' else 1.0:>6.3f} {flops[alg] / 1e9:>8.2f} "
                f"{rate:>8.1f} {rate / peak:>6.1%} {times['metrics']:>9.4f}"
            )
    print(f"float32 matmul peak ({args.peak_n}^3, best over the run): {max(peaks):.1f} GFLOP/s")
    ratios = {arch: ratio for arch, alg, ratio, _ in rows if alg == "modified"}
    worst = max(ratios.values())
    verdict = "met" if worst <= 0.85 else "MISSED"
    print(f"goal modified/ordinary <= 0.85: worst {worst:.3f} -> {verdict}")
    fractions = [frac for arch, _, _, frac in rows if arch in PEAK_GOAL_ARCHS]
    if fractions:
        low = min(fractions)
        verdict = "met" if low >= 0.8 else "MISSED"
        print(f"goal >= 80% of peak on N4/B4/B3: lowest {low:.1%} -> {verdict}")


if __name__ == "__main__":
    main()
