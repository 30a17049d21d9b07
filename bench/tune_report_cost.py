"""What one ``ray.tune.report`` costs inside a Tune function trial, against an N1 epoch.

Runs in one invocation: a local Ray (2 CPUs), one Tune trial that reports R times with a
batch of k epoch records each (k = 1 and k = 10, the worker's default ``report_every``),
and a plain loop of N1 epochs in this process. Prints ms per report, ms per epoch and
their ratio, i.e. the overhead of reporting every epoch vs every k epochs.

    .venv/bin/python bench/tune_report_cost.py [--reports 300]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def reporter(config: dict[str, Any]) -> None:
    """Report ``reports`` times a batch of ``k`` fake epoch records; time it in the trial."""
    import ray.tune

    record = {
        "epoch": 1,
        "idempotent_error": 0.1,
        "loss": 0.2,
        "norm": 1.0,
        "trace": 2.0,
        "update_norm": 0.01,
        "image_dim": 2.0,
        "train_idempotent_error": None,
        "seconds": 0.002,
    }
    n, k = config["reports"], config["k"]
    started = time.perf_counter()
    for _ in range(n):
        ray.tune.report({"batch": [{"trial_id": 1, "records": [record] * k}]})
    ms = (time.perf_counter() - started) * 1000 / n
    ray.tune.report({"ms_per_report": ms, "final": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=300)
    args = parser.parse_args()

    import ray
    import torch
    from configs import members  # bench/configs.py
    from ray import tune

    from idemcore.train import Training

    torch.set_num_threads(1)
    (config,) = members(1, 200)  # N1 modified, 10000 samples in one batch, seed 0
    run = Training(config)
    started = time.perf_counter()
    for _ in run.epochs():
        pass
    epoch_ms = (time.perf_counter() - started) * 1000 / config.epochs

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            tune.with_resources(reporter, {"cpu": 1}),
            param_space={"reports": args.reports, "k": tune.grid_search([1, 10])},
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path="/tmp/idem-bench-ray", verbose=0),
        ).fit()
        per_report = {r.config["k"]: r.metrics["ms_per_report"] for r in grid}
    finally:
        ray.shutdown()
    print(f"N1 epoch (10000 samples, full batch): {epoch_ms:.2f} ms")
    for k, ms in sorted(per_report.items()):
        print(
            f"report with {k:>2} records: {ms:.2f} ms = {ms / epoch_ms:.1f} epochs; "
            f"reporting every {k} epochs adds {ms / (k * epoch_ms):.0%} to training time"
        )


if __name__ == "__main__":
    main()
