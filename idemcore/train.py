"""The training loop, written once: configs in, EpochRecords per epoch out, TrialResults.

:class:`PackedTraining` trains P configs that share a :func:`pack_key` (everything but
seed and learning rate) side by side as one stacked network
(:mod:`idemcore.packed_engine`); every member keeps exactly what it would have alone: its
init, its data stream, its learning rate and optimizer state, its metrics and its own
divergence. :class:`Training` (one config) is a pack of one: the sweeps (packed), the
CLI and the tests all run this same loop (docs/benchmarks.md, "One loop", measures that
a pack of one costs no more than the plain torch loop).

The loop is a generator, so the CLI (progress bar), a Ray Tune trial (batched reports)
and the tests drive the same code. A non-finite loss or parameter ends a member's run as
``diverged`` (a result, never an exception).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from idemcore.algorithms import get_algorithm
from idemcore.architectures import is_activation_free, resolve_layers
from idemcore.config import TrialConfig
from idemcore.data import DataSource, GaussianFresh, make_data
from idemcore.metrics import (
    EXACT_JACOBIAN_MAX_DIM,
    IMAGE_DIM_POINTS,
    eigen_analysis,
    hutchinson_probes,
)
from idemcore.nets import build_net
from idemcore.optim import StackedOptimizer
from idemcore.packed_engine import (
    StackedNet,
    gradients,
    idempotent_error,
    identity_image,
    image_dim,
)
from idemcore.records import EpochRecord, TrialResult, finite_or_none

__all__ = ["EpochRecord", "PackedTraining", "Training", "TrialResult", "pack_key", "train"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Below this many elements per layer product, a pack's epoch runs on one CPU thread:
# ATen splits even tiny bmm calls across OpenMP threads, which cost ~100x more than the
# arithmetic (2.7 ms against 17 us per call measured with a busy 2-core machine).
SINGLE_THREAD_ELEMENTS = 1 << 16
# On a CPU, a pass over a batch works on at most this many elements per layer (members x
# widest layer x samples) at a time, so that its activations stay in the core's cache:
# 20 members of N3 (widest 10) then pass 1000 samples at a time. Measured on a 2-core
# Xeon (2 MiB L2 per core), a full batch of 10000 in one pass ran 1.2x (N3 modified) to
# 1.6x (N1 ordinary) slower than in chunks of 1000-2000; below ~250 samples per pass,
# dispatch dominates (docs/benchmarks.md, "Sweep throughput"). Networks wider than
# CHUNK_MAX_WIDTH (N4, B2-B4) are matrix-product bound and take the batch at once.
CHUNK_ELEMENTS = 200_000
MIN_CHUNK = 256
CHUNK_MAX_WIDTH = 128


def pack_key(config: TrialConfig) -> tuple[Any, ...]:
    """What members of one pack must share: everything except seed and learning_rate."""
    return (
        config.architecture,
        config.algorithm,
        config.data,
        config.data_path,
        config.samples,
        config.batch_size,
        config.init,
        config.init_std,
        config.gain,
        config.dtype,
        config.epochs,
        config.eval_samples,
        config.threshold,
        config.optimizer,
        config.device,
        config.tf32,
    )


def chunk_size(members: int, widest: int, device: torch.device) -> int | None:
    """Samples per pass for a pack on ``device`` (None: the whole batch at once, as on a
    GPU, where fewer and larger kernels are faster, and for wide networks)."""
    if device.type != "cpu" or widest > CHUNK_MAX_WIDTH:
        return None
    return max(MIN_CHUNK, CHUNK_ELEMENTS // max(1, members * widest))


@contextmanager
def _epoch_context(single_thread: bool) -> Iterator[None]:
    """While one epoch trains: subnormal floats flushed to zero, and, for small packs,
    one intra-op thread. Not held across a yield (other code runs there).

    Networks that ``modified`` collapses to the null map carry weights that keep
    shrinking geometrically; once n(n(n(x))) falls below 1e-38 (float32) every matrix
    product runs on subnormal numbers, about 100x slower on x86. Values that small are
    zero for every metric, so flushing them changes no result above the subnormal range.
    (PyTorch has no getter for the flag; its default, off, is restored.)
    """
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    if single_thread and threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def fresh_draw_groups(sources: Sequence[DataSource]) -> list[list[int]]:
    """Indices of the fresh-Gaussian sources grouped by the stream they draw (seed,
    samples, dim, dtype): one draw per group and epoch serves every member in it."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, source in enumerate(sources):
        if isinstance(source, GaussianFresh):
            key = (source.seed, source.samples, source.dim, source.dtype)
            groups.setdefault(key, []).append(i)
    return list(groups.values())


class PackedTraining:
    """Configs sharing one :func:`pack_key`, trained as one stacked network.

    ``epochs()`` yields, per epoch, one ``EpochRecord | None`` per member (None once that
    member has stopped, e.g. after diverging; the iterator ends once all have stopped);
    ``results()`` gives one ``TrialResult`` per member. Each member's records equal what
    it gives alone (float64: within 1e-9 relative; tests/idemcore/test_packed.py).

    ``seconds`` in each record and ``wall_seconds`` in each result are the member's
    share of the pack's time (the pack's time divided by the members still training),
    so summing them over a sweep still gives the compute spent.
    """

    def __init__(self, configs: Sequence[TrialConfig], device: str | torch.device = "cpu") -> None:
        if not configs:
            raise ValueError("PackedTraining needs at least one config")
        key = pack_key(configs[0])
        if any(pack_key(c) != key for c in configs[1:]):
            raise ValueError("PackedTraining: configs differ in more than seed and learning_rate")
        self.configs = list(configs)
        first = self.configs[0]
        self.device = torch.device(device)
        self.dtype = DTYPES[first.dtype]
        layers = resolve_layers(first.architecture)
        self.dim = layers[0].in_features
        self.size = len(self.configs)
        self.activation_free = is_activation_free(first.architecture)
        self._started = time.perf_counter()
        self._finished: float | None = None
        nets = [
            build_net(
                c.architecture,
                seed=c.seed,
                init=c.init,
                gain=c.gain,
                init_std=c.init_std,
                dtype=self.dtype,
            )
            for c in self.configs
        ]
        self.net = StackedNet.from_nets(nets, layers)
        self.net.weights = [w.to(self.device) for w in self.net.weights]
        self.net.biases = [None if b is None else b.to(self.device) for b in self.net.biases]
        self.algorithm = get_algorithm(first.algorithm)
        self.optimizer = StackedOptimizer(
            first.optimizer, self.net.params(), [c.learning_rate for c in self.configs]
        )
        self.sources: list[DataSource] = [
            make_data(
                c.data,
                dim=self.dim,
                samples=c.samples,
                seed=c.seed,
                dtype=self.dtype,
                eval_samples=c.eval_samples,
                data_path=c.data_path,
            )
            for c in self.configs
        ]
        # Samples last: (P, d, samples). Each member's eval/train set is its own.
        self.x_eval = torch.stack([s.eval_data() for s in self.sources]).to(self.device)
        self.x_eval = self.x_eval.transpose(1, 2).contiguous()
        trains = [s.train_data() for s in self.sources]
        self.x_train: torch.Tensor | None = None
        if all(t is not None for t in trains):
            stacked = torch.stack([t for t in trains if t is not None]).to(self.device)
            self.x_train = stacked.transpose(1, 2).contiguous()
        # Hutchinson probes for image_dim, fixed per member seed (tanh nets with d > 128).
        self.probes: torch.Tensor | None = None
        if not self.activation_free and self.dim > EXACT_JACOBIAN_MAX_DIM:
            points = min(IMAGE_DIM_POINTS, first.eval_samples)
            self.probes = torch.stack(
                [
                    hutchinson_probes(c.seed, points, self.dim, self.dtype, self.device)
                    for c in self.configs
                ]
            )  # (P, p, K, d)
        self.active = [True] * self.size
        self.diverged = [False] * self.size
        self.records: list[list[EpochRecord]] = [[] for _ in self.configs]
        self.epochs_to_threshold: list[int | None] = [None] * self.size
        self._member_seconds = [0.0] * self.size
        self._epochs_wall = 0.0
        widest = max(max(w.shape[1], w.shape[2]) for w in self.net.weights)
        work = self.size * widest * max(first.batch_size, first.eval_samples)
        self._single_thread = self.device.type == "cpu" and work < SINGLE_THREAD_ELEMENTS
        self._chunk = chunk_size(self.size, widest, self.device)
        # The epoch's data as drawn, (P, samples, d); members fill their own rows.
        self._buffer = torch.zeros(self.size, first.samples, self.dim, dtype=self.dtype)
        # Members whose fresh data is the same stream (same seed, so same generator
        # state, e.g. one seed at several learning rates) draw it once per epoch.
        self._fresh_groups = fresh_draw_groups(self.sources)

    def __len__(self) -> int:
        return self.size

    def _draw(self, epoch: int) -> torch.Tensor:
        """Each active member's training set for ``epoch``, from its own source: (P, d, n)."""
        for group in self._fresh_groups:
            live = [i for i in group if self.active[i]]
            if not live:
                continue
            # The group's first member's generator stands for all of them: each would
            # draw exactly this from its own (same seed, same state), as it does alone.
            source = self.sources[group[0]]
            assert isinstance(source, GaussianFresh)
            lead = self._buffer[live[0]]
            # Same generator, same call as GaussianFresh.epoch_data, written in place.
            torch.randn(
                source.samples, source.dim, generator=source._gen, dtype=self.dtype, out=lead
            )
            for i in live[1:]:
                self._buffer[i].copy_(lead)
        for i, source in enumerate(self.sources):
            if self.active[i] and not isinstance(source, GaussianFresh):
                self._buffer[i].copy_(source.epoch_data(epoch))
        x = self._buffer.to(self.device, non_blocking=True)
        # A transposed view, not a copy: bmm reads it as a transposed operand, which
        # costs less than the copy (measured: view 2.3 ms vs copy 3.4 ms per N1 epoch).
        return x.transpose(1, 2)

    def _flat_norm_sq(self, before: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for p, q in zip(self.net.params(), before, strict=True):
            diff = (p - q).reshape(self.size, -1)
            total += (diff * diff).sum(dim=1)
        return total

    def _params_finite(self) -> torch.Tensor:
        ok = torch.ones(self.size, dtype=torch.bool, device=self.device)
        for p in self.net.params():
            ok &= torch.isfinite(p.reshape(self.size, -1)).all(dim=1)
        return ok

    def _freeze(self, i: int) -> None:
        """Stop member ``i``: no more updates, and no NaN left in the shared tensors."""
        self.active[i] = False
        self.optimizer.freeze(i)
        for p in self.net.params():
            p[i].zero_()

    @torch.no_grad()
    def first_step_norms(self) -> list[float]:
        """Each member's ``||Δθ||`` after one update on its first batch of epoch 1 (the
        loop's own update; step calibration reads it, :mod:`idemcore.calibrate`)."""
        before = [p.clone() for p in self.net.params()]
        batch = self._draw(1)[:, :, : self.configs[0].batch_size]
        _, grads = gradients(self.net, self.algorithm, batch, self._chunk)
        self.optimizer.step(grads)
        norms: list[float] = self._flat_norm_sq(before).sqrt().tolist()
        return norms

    def _epoch(self, epoch: int, steps: int, m: int) -> tuple[list[list[float]], list[bool]]:
        """Train every member one epoch and measure it: per member ``[loss, update_norm,
        norm, trace, idempotent_error, image_dim(, train_idempotent_error)]`` and
        whether its loss and parameters are finite (one host sync for all)."""
        before = [p.clone() for p in self.net.params()]
        x_all = self._draw(epoch)  # (P, d, n)
        loss = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for s in range(steps):
            batch = x_all[:, :, s * m : (s + 1) * m]
            loss, grads = gradients(self.net, self.algorithm, batch, self._chunk)
            self.optimizer.step(grads)
        finite = torch.isfinite(loss) & self._params_finite()
        norm, trace = identity_image(self.net, self.dim)
        columns = [loss, self._flat_norm_sq(before).sqrt(), norm, trace]
        columns.append(idempotent_error(self.net, self.x_eval, self._chunk))
        columns.append(image_dim(self.net, self.x_eval, self.probes, self.activation_free))
        if self.x_train is not None:
            columns.append(idempotent_error(self.net, self.x_train, self._chunk))
        columns.append(finite.to(self.dtype))
        table = torch.stack(columns, dim=1).double().cpu().tolist()  # (P, k), one sync
        return [r[:-1] for r in table], [r[-1] == 1.0 for r in table]

    @torch.no_grad()
    def epochs(self) -> Iterator[list[EpochRecord | None]]:
        """One list per epoch, one record per member (None once it has stopped);
        ends early once every member has stopped."""
        cfg = self.configs[0]
        m = cfg.batch_size
        steps = cfg.samples // m
        for epoch in range(1, cfg.epochs + 1):
            if not any(self.active):
                break
            t0 = time.perf_counter()
            with _epoch_context(self._single_thread):  # not across the yield
                table, finite = self._epoch(epoch, steps, m)
            elapsed = time.perf_counter() - t0
            self._epochs_wall += elapsed
            seconds = elapsed / sum(self.active)
            row: list[EpochRecord | None] = [None] * self.size
            for i, values in enumerate(table):
                if not self.active[i]:
                    continue
                loss_v, upd, norm_v, trace_v, err_v, idim_v = values[:6]
                train_err = values[6] if self.x_train is not None else None
                ok = bool(finite[i]) and math.isfinite(loss_v)
                record = EpochRecord(
                    epoch=epoch,
                    idempotent_error=finite_or_none(err_v),
                    loss=finite_or_none(loss_v),
                    norm=finite_or_none(norm_v),
                    trace=finite_or_none(trace_v),
                    update_norm=finite_or_none(upd),
                    image_dim=finite_or_none(idim_v) if math.isfinite(err_v) else None,
                    train_idempotent_error=finite_or_none(train_err),
                    seconds=seconds,
                )
                self._member_seconds[i] += seconds
                if not ok or record.idempotent_error is None:
                    self.diverged[i] = True
                err = record.idempotent_error
                if self.epochs_to_threshold[i] is None and err is not None and err < cfg.threshold:
                    self.epochs_to_threshold[i] = epoch
                self.records[i].append(record)
                row[i] = record
            yield row
            for i in range(self.size):
                if self.active[i] and self.diverged[i]:
                    self._freeze(i)
        self._finished = time.perf_counter()

    def results(self) -> list[TrialResult]:
        """One final result per member (eigen-analysis for activation-free networks)."""
        end = self._finished if self._finished is not None else time.perf_counter()
        setup = max(0.0, end - self._started - self._epochs_wall) / self.size
        out: list[TrialResult] = []
        for i in range(self.size):
            records = self.records[i]
            eig = None
            if self.activation_free and not self.diverged[i]:
                eig = eigen_analysis(self.net.member_net(i))
            out.append(
                TrialResult.from_run(
                    records[-1] if records else None,
                    epochs_to_threshold=self.epochs_to_threshold[i],
                    epochs_run=len(records),
                    diverged=self.diverged[i],
                    wall_seconds=setup + self._member_seconds[i],
                    eig=eig,
                )
            )
        return out


class Training:
    """One run of a TrialConfig: a pack of one. Iterate ``epochs()``, then ``result()``."""

    def __init__(self, config: TrialConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.pack = PackedTraining([config], device=device)

    @property
    def net(self) -> nn.Sequential:
        """The network as it stands now, as an ordinary module (a copy)."""
        return self.pack.net.member_net(0)

    @property
    def records(self) -> list[EpochRecord]:
        return self.pack.records[0]

    @property
    def diverged(self) -> bool:
        return self.pack.diverged[0]

    @property
    def epochs_to_threshold(self) -> int | None:
        return self.pack.epochs_to_threshold[0]

    def epochs(self) -> Iterator[EpochRecord]:
        """Train epoch by epoch, yielding each epoch's record; stops early on divergence."""
        for (record,) in self.pack.epochs():
            if record is not None:
                yield record

    def result(self) -> TrialResult:
        """Final metrics (plus eigen-analysis for activation-free networks)."""
        return self.pack.results()[0]


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
