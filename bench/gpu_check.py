"""The GPU check behind ``bench/gpu_check.sh`` (run that; it exits early without CUDA).

Four steps, each timed and summarised in one table at the end:

1. ``cuda tests``: the suite's tests marked ``cuda`` (``pytest -m cuda``).
2. ``float64 N1..B1``: N1, N2, N3 and B1 (modified and ordinary, 4 seeds each) trained
   packed on the GPU and alone on the CPU in float64; every epoch's metrics and the
   final ones must agree within 1e-9 relative.
3. ``gpu: 0.25 sweep``: ``idem up`` in a temporary data directory, a 4-trial sweep with
   ``resources: {gpu: 0.25}`` submitted through the API; the four trials must succeed on
   the GPU (their recorded device), on one Ray node, with overlapping run times (they
   shared the GPU).
4. ``epoch cost``: one full-batch epoch of B3, B4 and N4 (10,000 rows) of each algorithm
   on the GPU against the GPU's float32 matmul peak measured in the same run (TF32 off),
   with ``bench/epoch_cost.py``'s timing and FLOP count.

Exit code 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from epoch_cost import bench_arch, epoch_flops, matmul_peak  # noqa: E402

from idemcore.config import TrialConfig  # noqa: E402
from idemcore.provenance import apply_numerics, device_name  # noqa: E402
from idemcore.train import EpochRecord, PackedTraining, train  # noqa: E402

RTOL = 1e-9
COMPARED = ("idempotent_error", "loss", "norm", "trace", "update_norm", "image_dim")


@dataclass
class Step:
    """One line of the summary table."""

    name: str
    ok: bool
    detail: str
    seconds: float


def relative_gap(a: float | None, b: float | None) -> float:
    """|a - b| / max(|a|, |b|) (0 for equal values, inf when only one is missing)."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def cuda_tests() -> tuple[bool, str]:
    """``pytest -m cuda``: the suite's CUDA tests (exit 5 = none collected is a failure)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return proc.returncode == 0, last


def float64_packed_vs_cpu(device: str = "cuda", epochs: int = 30) -> tuple[bool, str]:
    """N1-N3 and B1 packed on ``device`` against each member alone on the CPU (float64).

    (``device="cpu"`` runs the same comparison on the CPU: the test suite's smoke test.)
    """
    worst = 0.0
    packs = 0
    for arch in ("N1", "N2", "N3", "B1"):
        for algorithm in ("modified", "ordinary"):
            configs = [
                TrialConfig(
                    architecture=arch,
                    algorithm=algorithm,
                    learning_rate=0.01,
                    samples=1000,
                    batch_size=100,
                    epochs=epochs,
                    seed=seed,
                    dtype="float64",
                    eval_samples=500,
                    device=torch.device(device).type,
                )
                for seed in range(4)
            ]
            run = PackedTraining(configs, device=device)  # the workers' group run
            packs += 1
            gpu_rows: list[list[EpochRecord]] = [[] for _ in configs]
            for row in run.epochs():
                for i, record in enumerate(row):
                    if record is not None:
                        gpu_rows[i].append(record)
            for i, (config, result) in enumerate(zip(configs, run.results(), strict=True)):
                cpu_rows: list[EpochRecord] = []
                cpu = train(replace(config, device="cpu"), device="cpu", on_epoch=cpu_rows.append)
                if len(cpu_rows) != len(gpu_rows[i]):
                    return False, f"{arch} {algorithm} seed {i}: epoch counts differ"
                for g, c in zip(gpu_rows[i], cpu_rows, strict=True):
                    for name in COMPARED:
                        worst = max(worst, relative_gap(getattr(g, name), getattr(c, name)))
                for name in COMPARED:
                    worst = max(worst, relative_gap(getattr(result, name), getattr(cpu, name)))
    ok = worst <= RTOL
    return ok, f"{packs} packs of 4, worst relative gap {worst:.2e} (limit {RTOL:g})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_gpu_sweep(timeout_s: float, gpu: float = 0.25) -> tuple[bool, str]:
    """``idem up``, then four ``gpu: 0.25`` trials that must run on the GPU at once.

    (``gpu=0`` runs the same four trials on CPUs: the test suite's smoke test.)
    """
    import httpx

    device_class = "cuda" if gpu > 0 else "cpu"
    spec = {
        "name": "gpu-check shared GPU",
        "architectures": ["N3"],
        "algorithms": ["modified"],
        "learning_rates": [0.01],
        "batches": [{"samples": 10000, "batch_size": 100}],
        "seeds": 4,
        "epochs": 150,
        "resources": {"cpu": 1, "gpu": gpu},
        "pack": False,
        "max_concurrent": 4,
    }
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="idem-gpu-check-") as data_dir:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IDEM_")},
            "IDEM_DATA_DIR": data_dir,
            "IDEM_PORT": str(port),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        log = open(Path(data_dir) / "up.out", "w")  # noqa: SIM115 (closed below)
        up = subprocess.Popen(
            [
                *(sys.executable, "-m", "idemsweep", "up", "--num-cpus", "4"),
                *("--dashboard-port", str(free_port())),
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            with httpx.Client(base_url=url, timeout=10) as client:
                while True:
                    if up.poll() is not None:
                        return False, f"idem up exited ({up.returncode})"
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        return False, "the API did not come up"
                    time.sleep(0.5)
                created = client.post("/sweeps", json=spec).raise_for_status().json()
                sweep_id = created["id"]
                while True:
                    sweep = client.get(f"/sweeps/{sweep_id}").raise_for_status().json()
                    if sweep["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    if time.monotonic() > deadline:
                        return False, f"sweep still {sweep['status']} after {timeout_s:.0f} s"
                    time.sleep(1.0)
                trials = (
                    client.get(f"/sweeps/{sweep_id}/trials", params={"limit": 10})
                    .raise_for_status()
                    .json()["data"]
                )
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
            log.close()
    statuses = sorted({t["status"] for t in trials})
    devices = sorted({str(t["device"]) for t in trials})
    nodes = {t["ray_node_id"] for t in trials}
    starts = [t["started_at"] for t in trials if t["started_at"]]
    ends = [t["finished_at"] for t in trials if t["finished_at"]]
    overlap = bool(starts and ends) and max(starts) < min(ends)  # ISO UTC strings sort
    ok = (
        len(trials) == 4
        and statuses == ["succeeded"]
        and all(d.startswith(f"{device_class}: ") for d in devices)
        and len(nodes) == 1
        and overlap
    )
    detail = (
        f"sweep {sweep['status']}, trials {statuses}, device {devices}, "
        f"{len(nodes)} node(s), all four running at once: {overlap}"
    )
    return ok, detail


def epoch_cost_vs_peak(
    m: int, reps: int, device: str = "cuda", peak_n: int = 8192
) -> tuple[bool, str]:
    """B3, B4, N4 epochs on ``device`` as a fraction of its measured float32 matmul peak."""
    dev = torch.device(device)
    apply_numerics(tf32=False)
    peak = matmul_peak(peak_n, 10, dev)
    parts = []
    for arch in ("B3", "B4", "N4"):
        times = bench_arch(arch, m, reps, dev)
        flops = epoch_flops(arch, m)
        peak = max(peak, matmul_peak(peak_n, 5, dev))
        for alg in ("modified", "ordinary"):
            rate = flops[alg] / times[alg] / 1e9
            parts.append(f"{arch} {alg} {times[alg] * 1e3:.2f} ms ({rate / peak:.0%})")
    return True, f"fp32 matmul peak {peak:,.0f} GFLOP/s; " + ", ".join(parts)


def run_step(name: str, fn: Callable[[], tuple[bool, str]]) -> Step:
    started = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # one failing step must not hide the others' results
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    step = Step(name, ok, detail, time.perf_counter() - started)
    print(f"gpu_check: {name}: {'ok' if ok else 'FAILED'} ({step.seconds:.0f} s)", flush=True)
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10000, help="rows per epoch for step 4")
    parser.add_argument("--reps", type=int, default=5, help="timed epochs per algorithm")
    parser.add_argument("--sweep-timeout", type=float, default=240.0)
    parser.add_argument("--json", default=None, help="also write the steps to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible to torch {torch.__version__}; nothing to check")
        return 0
    print(f"gpu_check: {device_name('cuda')}, torch {torch.__version__}", flush=True)
    steps = [
        run_step("cuda tests", cuda_tests),
        run_step("float64 N1-N3,B1 packed GPU vs CPU", float64_packed_vs_cpu),
        run_step("gpu: 0.25 sweep via idem up", lambda: shared_gpu_sweep(args.sweep_timeout)),
        run_step("B3/B4/N4 epoch vs matmul peak", lambda: epoch_cost_vs_peak(args.m, args.reps)),
    ]
    width = max(len(s.name) for s in steps)
    print(f"\n{'step':<{width}}  result  {'s':>5}  detail")
    for s in steps:
        print(f"{s.name:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:>5.0f}  {s.detail}")
    if args.json:
        Path(args.json).write_text(json.dumps([s.__dict__ for s in steps], indent=2))
    return 0 if all(s.ok for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
