"""Sweep throughput: how fast a grid of small trials runs, four ways, in one invocation.

Parts (``--part``):

``pack``  N1, 20 members (seeds 0..19, 4 learning rates), 200 epochs, fresh data every
          epoch: ``PackedTraining`` against 20 sequential ``Training`` runs in the same
          process, interleaved over ``--repeats``; prints the best times, the ratio and
          the largest relative difference of any member's metric.
``keys``  every pack key of the grid below (architecture x algorithm x batch), one pack of
          ``--members`` against the same members one after another: ms per
          member-epoch and the ratio (``--epochs`` 200 by default; 20 is enough;
          ``--archs`` picks architectures, ``--chunk`` fixes the samples per pass).
``grid``  the issue's grid (N1, N2, N3, B1 x modified, ordinary x 4 learning rates x full
          and small batch x 5 seeds, 200 epochs: 320 trials), run by the modes chosen
          with ``--modes`` (default 1,2,3,4):
            1  a plain sequential loop in this process calling idemcore (the note's way)
            2  one Ray Tune trial per configuration, Tune's defaults (local Ray)
            3  the service end to end, unpacked: ``idem api`` + ``idem worker`` on SQLite
               in a temp data dir; POST the spec (pack: false), poll until every trial
               succeeded
            4  the same, packed (pack left automatic)
          For each: wall seconds, ratio to mode 1, epoch rows per second. Modes 3 and 4
          are timed from POST to every trial final, as the issue defines them; the
          service's start-up (migrations, api, worker, Ray) is printed apart.
          ``--epochs``, ``--seeds``, ``--lrs``, ``--archs`` shrink the grid.

Examples::

    .venv/bin/python bench/sweep_throughput.py --part pack
    .venv/bin/python bench/sweep_throughput.py --part grid --modes 1,4 --epochs 50
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from configs import LRS, SAMPLES, members  # bench/configs.py

from idemcore.config import TrialConfig
from idemcore.packed import PackedTraining
from idemcore.train import EpochRecord, Training

GRID_BATCHES = (SAMPLES, 2000)  # batch sizes: full and small


# ---------------------------------------------------------------- part: pack (N1 x 20)


def run_sequential(configs: list[TrialConfig]) -> list[list[EpochRecord]]:
    out = []
    for config in configs:
        run = Training(config)
        out.append(list(run.epochs()))
        run.result()
    return out


def run_packed(configs: list[TrialConfig]) -> list[list[EpochRecord]]:
    pt = PackedTraining(configs)
    out: list[list[EpochRecord]] = [[] for _ in configs]
    for row in pt.epochs():
        for i, record in enumerate(row):
            if record is not None:
                out[i].append(record)
    pt.results()
    return out


def max_rel_diff(
    a: list[list[EpochRecord]], b: list[list[EpochRecord]], floor: float = 0.0
) -> tuple[float, str]:
    """Largest relative difference of any metric of any member at any epoch, and which
    metric; values below ``floor`` in magnitude are compared absolutely. Round-off sets
    the floor: a converged member's update_norm is about one ulp of its weights (~1e-9
    in float32, 1e-19 to 1e-12 in float64) and an exact projection's idempotent error
    is ~1e-33 in float64, in either run, with different rounding."""
    worst, which = 0.0, "-"
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb, strict=True):
            for f in fields(EpochRecord):
                if f.name in ("seconds", "epoch"):
                    continue
                u, v = getattr(x, f.name), getattr(y, f.name)
                if u is None or v is None:
                    if u is not v:
                        return math.inf, f.name
                    continue
                diff = abs(u - v) / max(abs(u), abs(v), floor, 1e-300)
                if diff > worst:
                    worst, which = diff, f.name
    return worst, which


def part_pack(args: argparse.Namespace) -> None:
    configs = members(args.members, args.epochs, dtype=args.dtype)  # N1 modified, full batch
    seq_times: list[float] = []
    pack_times: list[float] = []
    seq_cpu: list[float] = []
    pack_cpu: list[float] = []
    seq = packed = None
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        seq = run_sequential(configs)
        seq_times.append(time.perf_counter() - t)
        seq_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        packed = run_packed(configs)
        pack_times.append(time.perf_counter() - t)
        pack_cpu.append(time.process_time() - c)
    assert seq is not None and packed is not None
    best_seq, best_pack = min(seq_times), min(pack_times)
    floor = 1e-4 if args.dtype == "float32" else 1e-9
    diff, metric = max_rel_diff(seq, packed, floor)
    print(
        f"N1 x {args.members} members x {args.epochs} epochs, 10000 fresh samples, "
        f"{args.dtype}, torch threads {torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  sequential Training: wall {best_seq:.2f} s (all: {_fmt(seq_times)}), "
        f"CPU {min(seq_cpu):.2f} s"
    )
    print(
        f"  PackedTraining:      wall {best_pack:.2f} s (all: {_fmt(pack_times)}), "
        f"CPU {min(pack_cpu):.2f} s"
    )
    print(
        f"  ratio sequential / packed: wall {best_seq / best_pack:.2f}x, "
        f"CPU {min(seq_cpu) / min(pack_cpu):.2f}x"
    )
    print(
        f"  largest relative difference of any metric (values below {floor:g} compared "
        f"absolutely): {diff:.2e} ({metric})"
    )


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# ---------------------------------------------------------------- part: keys


def part_keys(args: argparse.Namespace) -> None:
    """Per pack key of the grid: one pack of ``--members`` against the same members run
    one after another, both on the current torch threads; ms per member-epoch."""
    print(
        f"per pack key: {args.members} members x {args.epochs} epochs, torch threads "
        f"{torch.get_num_threads()}, chunk {'auto' if args.chunk is None else args.chunk}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    total_seq = total_pack = 0.0
    for arch in args.archs:
        for algorithm in ("modified", "ordinary"):
            for batch in GRID_BATCHES:
                size, dtype = args.members, args.dtype
                configs = members(size, args.epochs, arch, algorithm, batch, dtype=dtype)
                t = time.perf_counter()
                seq = run_sequential(configs)
                seq_ms = (time.perf_counter() - t) * 1e3 / sum(len(r) for r in seq)
                t = time.perf_counter()
                packed = run_packed(configs)
                pack_ms = (time.perf_counter() - t) * 1e3 / sum(len(r) for r in packed)
                total_seq += seq_ms
                total_pack += pack_ms
                print(
                    f"  {arch} {algorithm:8s} batch {batch:5d}: sequential {seq_ms:.3f} "
                    f"ms, packed {pack_ms:.3f} ms per member-epoch: {seq_ms / pack_ms:.2f}x",
                    flush=True,
                )
    print(f"  all keys, summed per member-epoch: {total_seq / total_pack:.2f}x")


# ---------------------------------------------------------------- part: grid


def grid_configs(args: argparse.Namespace) -> list[TrialConfig]:
    """The grid, as TrialConfigs, in the order the spec would expand it."""
    axes = itertools.product(
        args.archs, ("modified", "ordinary"), args.lrs, GRID_BATCHES, range(args.seeds)
    )
    return [
        TrialConfig(arch, algorithm, lr, SAMPLES, batch, args.epochs, seed)
        for arch, algorithm, lr, batch, seed in axes
    ]


def grid_spec(args: argparse.Namespace, pack: Any) -> dict[str, Any]:
    """The same grid as a POST /sweeps body."""
    spec: dict[str, Any] = {
        "name": f"throughput-{'packed' if pack is None else 'unpacked'}",
        "architectures": list(args.archs),
        "algorithms": ["modified", "ordinary"],
        "learning_rates": list(args.lrs),
        "batches": [{"samples": SAMPLES, "batch_size": b} for b in GRID_BATCHES],
        "seeds": args.seeds,
        "epochs": args.epochs,
        "data": "gaussian-fresh",
        "resources": {"cpu": 1, "gpu": 0},
    }
    if pack is not None:
        spec["pack"] = pack
    return spec


def mode_sequential(args: argparse.Namespace) -> int:
    """(1) the note's way: one process, one trial after another."""
    rows = 0
    for config in grid_configs(args):
        run = Training(config)
        rows += sum(1 for _ in run.epochs())
        run.result()
    return rows


def mode_tune(args: argparse.Namespace) -> int:
    """(2) one Ray Tune trial per configuration, Tune's defaults, a report per epoch."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        run = Training(TrialConfig.from_dict(config))
        for record in run.epochs():
            tune.report({k: v for k, v in record.to_dict().items() if v is not None})

    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="idem-bench-tune-") as storage:
            param_space = {"grid": tune.grid_search([c.to_dict() for c in grid_configs(args)])}
            tuner = tune.Tuner(
                lambda cfg: trainable(cfg["grid"]),
                param_space=param_space,
                run_config=tune.RunConfig(storage_path=storage, verbose=0),
            )
            results = tuner.fit()
            rows = 0
            for i in range(len(results)):
                frame = results[i].metrics_dataframe
                rows += 0 if frame is None else len(frame)
    finally:
        ray.shutdown()
    return rows


def mode_service(args: argparse.Namespace, packed: bool) -> tuple[int, float]:
    """(3)/(4) the service end to end: idem api + idem worker on SQLite in a temp dir.
    Timed as the issue defines it, from POST to every trial final; the service's
    start-up (migrations, api, worker, Ray) is printed apart."""
    from sweep_throughput_service import run_service_sweep  # bench/ is on sys.path

    spec = grid_spec(args, None if packed else False)
    run = run_service_sweep(spec, expected_trials=len(grid_configs(args)))
    print(
        f"    POST -> all final {run.sweep_seconds:.1f} s; with the service's start-up "
        f"{run.with_startup_seconds:.1f} s",
        flush=True,
    )
    return run.rows, run.sweep_seconds


MODES: dict[str, tuple[str, Callable[[argparse.Namespace], int | tuple[int, float]]]] = {
    "1": ("sequential loop (idemcore, one process)", mode_sequential),
    "2": ("Ray Tune, one trial per config, defaults", mode_tune),
    "3": ("service end to end, unpacked", lambda a: mode_service(a, packed=False)),
    "4": ("service end to end, packed", lambda a: mode_service(a, packed=True)),
}


def part_grid(args: argparse.Namespace) -> None:
    n = len(grid_configs(args))
    print(
        f"grid: {'/'.join(args.archs)} x modified,ordinary x lrs {list(args.lrs)} x "
        f"full+small batch x {args.seeds} seeds, {args.epochs} epochs = {n} trials"
    )
    times: dict[str, float] = {}
    for mode in args.modes:
        label, fn = MODES[mode]
        t = time.perf_counter()
        outcome = fn(args)
        times[mode] = time.perf_counter() - t
        rows = outcome if isinstance(outcome, int) else outcome[0]
        if not isinstance(outcome, int):
            times[mode] = outcome[1]  # the service modes: POST -> every trial final
        print(
            f"  ({mode}) {label}: {times[mode]:.1f} s, {rows} epoch rows, "
            f"{rows / times[mode]:.0f} rows/s",
            flush=True,
        )
    if "1" in times:
        for mode, seconds in times.items():
            print(
                f"  ({mode}) / (1): {seconds / times['1']:.2f} of the sequential time "
                f"({times['1'] / seconds:.2f}x faster)"
            )
    if "2" in times and "4" in times:
        print(f"  (2) / (4): {times['2'] / times['4']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["pack", "keys", "grid"], default="grid")
    p.add_argument("--members", type=int, default=20, help="pack, keys: members")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3, help="pack: interleaved repeats")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="pack, keys: samples per pass in a pack (0: the whole batch); default: "
        "idemcore.train.chunk_size",
    )
    p.add_argument("--modes", default="1,2,3,4", help="grid: which modes, e.g. 1,4")
    p.add_argument("--seeds", type=int, default=5, help="grid: seeds per configuration")
    p.add_argument("--lrs", default=",".join(str(v) for v in LRS), help="grid: lrs")
    p.add_argument("--archs", default="N1,N2,N3,B1", help="grid: architectures")
    args = p.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.lrs = tuple(float(v) for v in args.lrs.split(","))
    args.archs = tuple(a.strip() for a in args.archs.split(","))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.chunk is not None:
        from idemcore import train as idemcore_train

        fixed = None if args.chunk == 0 else args.chunk
        idemcore_train.chunk_size = lambda *_: fixed  # type: ignore[assignment]
    if args.part == "pack":
        part_pack(args)
    elif args.part == "keys":
        part_keys(args)
    else:
        part_grid(args)


if __name__ == "__main__":
    main()
