"""The packed training loop: P members of one pack key, one batched step per batch.

Mirrors idemcore.train.Training member by member: same init (each member's net is built
with build_net(seed=...)), same data (each member's own DataSource and generators, drawn
in the same order), same update, same metrics, same divergence rule. What is shared is
only the arithmetic: one bmm per layer for all members.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from idemcore.config import TrialConfig
from idemcore.data import DataSource, GaussianFresh, make_data
from idemcore.metrics import eigen_analysis
from idemcore.nets import build_net, input_dim, is_activation_free, resolve_layers
from idemcore.packed_engine import StackedNet, idempotent_error, identity_image, image_dim, step
from idemcore.train import DTYPES, EpochRecord, TrialResult, finite_or_none

# Below this many elements per layer product, a pack's epoch runs on one CPU thread:
# ATen splits even tiny bmm calls across OpenMP threads, which cost ~100x more than the
# arithmetic (2.7 ms against 17 us per call measured with a busy 2-core machine).
SINGLE_THREAD_ELEMENTS = 1 << 16
# On a CPU, a pass over a batch works on at most this many elements per layer (members x
# widest layer x samples) at a time, so that its activations stay in the core's cache:
# 20 members of N3 (widest 10) then pass 1000 samples at a time. Measured on a 2-core
# Xeon (2 MiB L2 per core), a full batch of 10000 in one pass ran 1.2x (N3 modified) to
# 1.6x (N1 ordinary) slower than in chunks of 1000-2000; below ~250 samples per pass,
# dispatch dominates (docs/benchmarks.md, "Sweep throughput").
CHUNK_ELEMENTS = 200_000
MIN_CHUNK = 256


def chunk_size(members: int, widest: int, device: torch.device) -> int | None:
    """Samples per pass for a pack on ``device`` (None: the whole batch at once, as on a
    GPU, where fewer and larger kernels are faster)."""
    if device.type != "cpu":
        return None
    return max(MIN_CHUNK, CHUNK_ELEMENTS // max(1, members * widest))


@contextmanager
def _epoch_context(single_thread: bool) -> Iterator[None]:
    """While one epoch trains: denormals flushed to zero (as idemcore.train does: members
    decaying toward the null map would otherwise crawl through subnormal arithmetic),
    and, for small packs, one intra-op thread. Not held across a yield."""
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


class BatchedTraining:
    """Several configs with one pack key, trained as one stacked network.

    ``seconds`` in each record and ``wall_seconds`` in each result are the member's
    share of the pack's time (the pack's time divided by the members still training),
    so summing them over a sweep still gives the compute spent.
    """

    def __init__(self, configs: Sequence[TrialConfig], device: str | torch.device = "cpu") -> None:
        self.configs = list(configs)
        first = self.configs[0]
        self.device = torch.device(device)
        self.dtype = DTYPES[first.dtype]
        self.dim = input_dim(first.architecture)
        self.size = len(self.configs)
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
        self.net = StackedNet.from_nets(nets, resolve_layers(first.architecture))
        self.net.weights = [w.to(self.device) for w in self.net.weights]
        self.net.biases = [None if b is None else b.to(self.device) for b in self.net.biases]
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
        lrs = [c.learning_rate for c in self.configs]
        self.lr = torch.tensor(lrs, dtype=self.dtype, device=self.device).view(-1, 1, 1)
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

    def _draw(self, epoch: int) -> torch.Tensor:
        """Each active member's training set for ``epoch``, from its own source: (P, d, n)."""
        for i, source in enumerate(self.sources):
            if not self.active[i]:
                continue
            if isinstance(source, GaussianFresh):
                # Same generator, same call as GaussianFresh.epoch_data, written in place.
                torch.randn(
                    source.samples,
                    source.dim,
                    generator=source._gen,
                    dtype=self.dtype,
                    out=self._buffer[i],
                )
            else:
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
        self.lr[i] = 0
        for p in self.net.params():
            p[i].zero_()

    def _epoch(
        self, epoch: int, steps: int, m: int, algorithm: str
    ) -> tuple[list[list[float]], list[bool]]:
        """Train every member one epoch and measure it: per member ``[loss, update_norm,
        norm, trace, idempotent_error, image_dim(, train_idempotent_error)]`` and
        whether its loss and parameters are finite (one host sync for all)."""
        before = [p.clone() for p in self.net.params()]
        x_all = self._draw(epoch)  # (P, d, n)
        loss = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for s in range(steps):
            batch = x_all[:, :, s * m : (s + 1) * m]
            loss = step(self.net, algorithm, batch, self.lr, self._chunk)
        finite = torch.isfinite(loss) & self._params_finite()
        norm, trace = identity_image(self.net, self.dim)
        columns = [loss, self._flat_norm_sq(before).sqrt(), norm, trace]
        columns.append(idempotent_error(self.net, self.x_eval, self._chunk))
        columns.append(image_dim(self.net, self.x_eval))
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
                table, finite = self._epoch(epoch, steps, m, cfg.algorithm)
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
        eig_applies = is_activation_free(self.configs[0].architecture)
        out: list[TrialResult] = []
        for i in range(self.size):
            records = self.records[i]
            eig = None
            if eig_applies and not self.diverged[i]:
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
