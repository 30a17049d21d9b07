"""The Ray Tune function: one Tune trial trains a GROUP of store trials.

A group is a list of ``{"trial_id": int, "config": TrialConfig dict}``; it has one
member unless the sweep packs small trials (``idemcore.packed``). The function never
touches the database: every ``report_every`` epochs it reports, through
``ray.tune.report``, the epoch records of every member since the last report, and at the
end each member's final state. The Tune callback on the driver
(:class:`workers.tune_runner.StoreCallback`) writes them to the store.

Report payload (plain lists and dicts, so Tune's result handling never needs our types)::

    {"batch": [{"trial_id": 7, "records": [EpochRecord.to_dict(), ...]}, ...],
     "final": [{"trial_id": 7, "status": "succeeded" | "diverged",
                "result": TrialResult.to_dict(),
                "provenance": Provenance.to_dict(),
                "reuse_key": TrialConfig.config_hash()}, ...]}  # last report only

Before training, the group's float32 numerics are set explicitly
(:func:`idemcore.provenance.apply_numerics`: TF32 off unless the configs ask for it), and
the provenance (code fingerprint, versions, device, host, Ray node, pack) is collected
in the trial, so it describes the process that computed the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from idemcore.config import TrialConfig
from idemcore.provenance import Provenance, apply_numerics
from idemcore.records import EpochRecord
from idemcore.train import PackedTraining

GROUP_KEY = "group"
REPORT_EVERY_KEY = "report_every"
RECORD_EVERY_KEY = "record_every"
GPU_KEY = "gpu"


def make_group_run(configs: Sequence[TrialConfig], device: torch.device) -> PackedTraining:
    """The group's training run: idemcore's one loop (a group of one is a pack of one).
    Built up front, so a bad member (missing data file, ...) fails before training."""
    return PackedTraining(configs, device=device)


class DeviceUnavailable(RuntimeError):
    """The trial asked for a GPU this node cannot give; retrying cannot help."""


def choose_device(gpu: float) -> torch.device:
    """CUDA when Ray gave this trial a GPU; else CPU with one torch thread per trial.

    A trial that asked for a GPU but cannot use CUDA raises at once (the error text
    starts with "CUDA not available"), so it ends ``failed`` instead of hanging or
    silently training on the CPU.
    """
    if gpu > 0:
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"CUDA not available: the trial asked for gpu={gpu} but this node's torch "
                f"{torch.__version__} sees no CUDA device"
            )
        import ray

        # Only inside Ray: outside, ray.get_gpu_ids() would start a whole local cluster.
        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
        if not gpu_ids:
            raise DeviceUnavailable(
                f"CUDA not available: Ray assigned no GPU (asked for gpu={gpu})"
            )
        return torch.device("cuda")
    torch.set_num_threads(1)
    return torch.device("cpu")


def _batch(pending: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"trial_id": tid, "records": recs} for tid, recs in pending.items() if recs]


class RecordEvery:
    """Which of a run's epoch records are stored (the spec's ``record_every: k``): every
    k-th epoch, the first, the one whose idempotent error first fell below the threshold
    (as ``epochs_to_threshold`` counts it) and the last; k = 1 keeps all."""

    def __init__(self, every: int, threshold: float) -> None:
        self.every = every
        self.threshold = threshold
        self.crossed = False
        self.held: EpochRecord | None = None  # the latest record not kept (maybe the last)

    def keep(self, record: EpochRecord) -> bool:
        """Whether to store ``record``; one not stored is held until the next one."""
        err = record.idempotent_error
        crossing = not self.crossed and err is not None and err < self.threshold
        self.crossed = self.crossed or crossing
        if self.every == 1 or record.epoch == 1 or record.epoch % self.every == 0 or crossing:
            self.held = None
            return True
        self.held = record
        return False


def run_group(
    members: Sequence[tuple[int, TrialConfig]],
    *,
    device: torch.device,
    report_every: int,
    report: Any,
    ray_node_id: str | None = None,
    record_every: int = 1,
) -> None:
    """Train ``members`` and call ``report(payload)`` every ``report_every`` epochs,
    with the epoch records :class:`RecordEvery` keeps.

    Separate from the Tune function so tests and benchmarks can drive it without Ray.
    """
    configs = [config for _, config in members]
    tf32 = {config.tf32 for config in configs}
    if len(tf32) != 1:  # packing keys on tf32 (idemcore.packed.pack_key), so never
        raise ValueError("a group of trials must agree on tf32")
    apply_numerics(tf32.pop())
    run = make_group_run(configs, device)
    packed = len(members) > 1
    provenance = Provenance.collect(
        device, ray_node_id=ray_node_id, pack_id=members[0][0] if packed else None
    ).to_dict()
    pending: dict[int, list[dict[str, Any]]] = {tid: [] for tid, _ in members}
    kept = {tid: RecordEvery(record_every, config.threshold) for tid, config in members}
    since_report = 0
    for row in run.epochs():
        for (tid, _), record in zip(members, row, strict=True):
            if record is not None and kept[tid].keep(record):
                pending[tid].append(record.to_dict())
        since_report += 1
        if since_report >= report_every:
            report({"batch": _batch(pending)})
            pending = {tid: [] for tid, _ in members}
            since_report = 0
    for tid, _ in members:  # the last epoch, when record_every skipped it
        if (last := kept[tid].held) is not None:
            pending[tid].append(last.to_dict())
    final = [
        {
            "trial_id": tid,
            "status": "diverged" if result.diverged else "succeeded",
            "result": result.to_dict(),
            "provenance": provenance,
            "reuse_key": config.config_hash(),
        }
        for (tid, config), result in zip(members, run.results(), strict=True)
    ]
    report({"batch": _batch(pending), "final": final})


def train_group(tune_config: dict[str, Any]) -> None:
    """The Tune function trainable: build the TrialConfigs once, train, report batches."""
    import ray.tune

    members = [
        (int(m["trial_id"]), TrialConfig.from_dict(m["config"])) for m in tune_config[GROUP_KEY]
    ]
    try:
        device = choose_device(float(tune_config.get(GPU_KEY, 0) or 0))
    except DeviceUnavailable as exc:
        # Deterministic: report the failure as the final state instead of raising, so
        # Tune's FailureConfig does not retry it on the same kind of node.
        final = [
            {"trial_id": tid, "status": "failed", "result": None, "error": str(exc)}
            for tid, _ in members
        ]
        ray.tune.report({"batch": [], "final": final})
        return
    run_group(
        members,
        device=device,
        report_every=max(1, int(tune_config.get(REPORT_EVERY_KEY, 10))),
        report=ray.tune.report,
        ray_node_id=ray.get_runtime_context().get_node_id(),
        record_every=max(1, int(tune_config.get(RECORD_EVERY_KEY, 1))),
    )
