"""The training loop: a TrialConfig in, one EpochRecord per epoch out, a TrialResult at the end.

The loop is a generator, so the CLI (progress bar), a Ray Tune trial (batched reports)
and the tests drive the same code. A non-finite loss or parameter ends the run as
``diverged`` (a result, never an exception).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from idemcore.algorithms import get_algorithm
from idemcore.config import TrialConfig
from idemcore.data import DataSource, make_data
from idemcore.metrics import EigenAnalysis, EpochMetrics, eigen_analysis
from idemcore.nets import build_net, input_dim, is_activation_free
from idemcore.optim import make_optimizer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def finite_or_none(value: float | None) -> float | None:
    """Non-finite numbers become None, so records stay JSON- and SQL-safe."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch (1-based). Non-finite values are None."""

    epoch: int
    idempotent_error: float | None
    loss: float | None
    norm: float | None
    trace: float | None
    update_norm: float | None
    image_dim: float | None
    train_idempotent_error: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrialResult:
    """The final state of a run."""

    idempotent_error: float | None
    train_idempotent_error: float | None
    loss: float | None
    norm: float | None
    trace: float | None
    update_norm: float | None
    image_dim: float | None
    epochs_to_threshold: int | None
    epochs_run: int
    diverged: bool
    wall_seconds: float
    eigenvalues: list[tuple[float, float]] | None = None
    eig_near_zero: int | None = None
    eig_near_one: int | None = None
    wb_norm: float | None = None

    @classmethod
    def from_run(
        cls,
        last: EpochRecord | None,
        *,
        epochs_to_threshold: int | None,
        epochs_run: int,
        diverged: bool,
        wall_seconds: float,
        eig: EigenAnalysis | None,
    ) -> TrialResult:
        """The final result of a run from its last epoch record and eigen-analysis
        (shared by ``Training`` and ``PackedTraining``, so both report alike)."""
        return cls(
            idempotent_error=last.idempotent_error if last else None,
            train_idempotent_error=last.train_idempotent_error if last else None,
            loss=last.loss if last else None,
            norm=last.norm if last else None,
            trace=last.trace if last else None,
            update_norm=last.update_norm if last else None,
            image_dim=last.image_dim if last else None,
            epochs_to_threshold=epochs_to_threshold,
            epochs_run=epochs_run,
            diverged=diverged,
            wall_seconds=wall_seconds,
            eigenvalues=eig.eigenvalues if eig else None,
            eig_near_zero=eig.near_zero if eig else None,
            eig_near_one=eig.near_one if eig else None,
            wb_norm=eig.wb_norm if eig else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.eigenvalues is not None:
            out["eigenvalues"] = [list(v) for v in self.eigenvalues]
        return out


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero on CPU while the block runs, then restore the default.

    Networks that ``modified`` collapses to the null map carry weights that keep shrinking
    geometrically; once n(n(n(x))) falls below 1e-38 (float32) every matrix product runs on
    subnormal numbers, about 100x slower on x86. Values that small are zero for every
    metric, so flushing them changes no result above the subnormal range. (PyTorch has no
    getter for this flag; the default, off, is restored.)
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the parameters (to measure the epoch's update)."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def _update_norm(params: Sequence[torch.Tensor], before: list[torch.Tensor]) -> torch.Tensor:
    """||params - before|| over all parameters, as a 0-d tensor (no host sync)."""
    diffs = torch._foreach_sub([p.detach() for p in params], before)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))


class Training:
    """One run of a TrialConfig. Iterate ``epochs()``, then read ``result()``."""

    def __init__(self, config: TrialConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = DTYPES[config.dtype]
        self.dim = input_dim(config.architecture)
        self.net = build_net(
            config.architecture,
            seed=config.seed,
            init=config.init,
            gain=config.gain,
            init_std=config.init_std,
            dtype=self.dtype,
        ).to(self.device)
        self.algorithm = get_algorithm(config.algorithm)
        self.optimizer = make_optimizer(
            config.optimizer, self.net.parameters(), config.learning_rate
        )
        self.data: DataSource = make_data(
            config.data,
            dim=self.dim,
            samples=config.samples,
            seed=config.seed,
            dtype=self.dtype,
            eval_samples=config.eval_samples,
            data_path=config.data_path,
        )
        self.x_eval = self.data.eval_data().to(self.device)
        train = self.data.train_data()
        self.x_train = None if train is None else train.to(self.device)
        self.metrics = EpochMetrics(
            self.x_eval,
            self.x_train,
            config.seed,
            activation_free=is_activation_free(config.architecture),
        )
        self.records: list[EpochRecord] = []
        self.diverged = False
        self.epochs_to_threshold: int | None = None
        self._started = time.perf_counter()
        self._finished: float | None = None

    def _measure(self, epoch: int, loss: float, update_norm: float, seconds: float) -> EpochRecord:
        norm, trace, ierr, train_err, idim = self.metrics.measure(self.net)
        return EpochRecord(
            epoch=epoch,
            idempotent_error=finite_or_none(ierr),
            loss=finite_or_none(loss),
            norm=finite_or_none(norm),
            trace=finite_or_none(trace),
            update_norm=finite_or_none(update_norm),
            image_dim=finite_or_none(idim),
            train_idempotent_error=finite_or_none(train_err),
            seconds=seconds,
        )

    def _epoch(
        self, epoch: int, params: Sequence[torch.Tensor], steps: int, m: int, t0: float
    ) -> tuple[EpochRecord, bool]:
        """Train one epoch and measure it; return the record and whether all is finite."""
        before = _snapshot(params)
        x_all = self.data.epoch_data(epoch).to(self.device)  # (n, d)
        loss = torch.zeros((), dtype=self.dtype, device=self.device)
        for i in range(steps):
            loss, grads = self.algorithm.gradients(self.net, x_all[i * m : (i + 1) * m])
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
        all_finite = torch.stack([torch.isfinite(p).all() for p in params]).all()
        checks = torch.stack([loss, _update_norm(params, before), all_finite.to(loss.dtype)])
        loss_value, update_norm, params_finite = checks.tolist()  # one host sync
        finite = math.isfinite(loss_value) and params_finite == 1.0
        record = self._measure(epoch, loss_value, update_norm, time.perf_counter() - t0)
        return record, finite

    def epochs(self) -> Iterator[EpochRecord]:
        """Train epoch by epoch, yielding each epoch's record; stops early on divergence."""
        cfg = self.config
        m = cfg.batch_size
        steps = cfg.samples // m
        params = list(self.net.parameters())
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            with flush_denormals():  # not across the yield: other code runs there
                record, finite = self._epoch(epoch, params, steps, m, t0)
            if not finite or record.idempotent_error is None:
                self.diverged = True
            err = record.idempotent_error
            if self.epochs_to_threshold is None and err is not None and err < cfg.threshold:
                self.epochs_to_threshold = epoch
            self.records.append(record)
            yield record
            if self.diverged:
                break
        self._finished = time.perf_counter()

    def result(self) -> TrialResult:
        """Final metrics (plus eigen-analysis for activation-free networks)."""
        eig = None
        if is_activation_free(self.config.architecture) and not self.diverged:
            eig = eigen_analysis(self.net)
        end = self._finished if self._finished is not None else time.perf_counter()
        return TrialResult.from_run(
            self.records[-1] if self.records else None,
            epochs_to_threshold=self.epochs_to_threshold,
            epochs_run=len(self.records),
            diverged=self.diverged,
            wall_seconds=end - self._started,
            eig=eig,
        )


def train(
    config: TrialConfig,
    *,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrialResult:
    """Run ``config`` to the end, calling ``on_epoch`` after each epoch; return the result."""
    run = Training(config, device=device)
    for record in run.epochs():
        if on_epoch is not None:
            on_epoch(record)
    return run.result()
