"""A claimed sweep as one Ray Tune experiment, and the callback that writes to the store.

One Tune trial per group of store trials (a group has one member unless the spec packs
small trials). Trials never touch the database: :class:`StoreCallback` runs on the
driver, writes each reported batch of epoch rows in one bulk insert, and each final state
(rows + status) in one transaction. ``append_epochs`` skips rows already stored, so a
trial rerun from scratch (retry, or resume after a crash) never duplicates a row.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from ray import cloudpickle, tune
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from idemcore.train import EpochRecord, TrialResult
from service.exceptions import SpecInvalid
from service.faultpoints import pause_point
from service.settings import Settings
from service.spec import SweepSpec
from service.store.epochs import append_epochs
from service.store.records import TrialTodo
from service.store.status import TrialStatus
from service.store.trials import finish_trial, mark_trials_running, unfinished_trials
from workers.store_retry import in_transaction
from workers.trainable import GPU_KEY, GROUP_KEY, RECORD_EVERY_KEY, REPORT_EVERY_KEY

log = logging.getLogger(__name__)

# Tune trials per experiment that automatic packing aims to stay under (Tune's own cost
# grows with its trial count: one actor start, result and state entry each).
MAX_TUNE_TRIALS = 100


def load_spec(sweep_id: int, stored: dict[str, Any]) -> SweepSpec:
    """The sweep's stored spec as a SweepSpec (the API stored it validated); a spec that
    does not validate (written to the store by hand, or by an older version) raises
    SpecInvalid naming the first bad field, which fails the sweep with that message."""
    try:
        return SweepSpec.model_validate(stored)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise SpecInvalid(
            f"sweep {sweep_id}: the stored spec is not a valid SweepSpec: {where}: "
            f"{first['msg']} ({exc.error_count()} error(s))"
        ) from None


@dataclass(frozen=True)
class RunPlan:
    """How the worker runs a sweep: what it takes from the stored, validated spec."""

    cpu: float
    gpu: float
    pack: int | Literal[False] | None  # None: automatic; False: off; N: group size
    max_concurrent: int | None
    max_failures: int
    record_every: int

    @classmethod
    def from_spec(cls, spec: SweepSpec) -> RunPlan:
        """Resources per Tune trial, ``pack``, ``max_concurrent`` and ``max_failures``."""
        return cls(
            cpu=spec.resources.cpu,
            gpu=spec.resources.gpu,
            pack=spec.pack,
            max_concurrent=spec.max_concurrent,
            max_failures=spec.max_failures,
            record_every=spec.record_every,
        )

    def resources(self) -> dict[str, float]:
        """Per-Tune-trial resources for ``tune.with_resources``."""
        return {"cpu": self.cpu, "gpu": self.gpu}

    def concurrency(self, cluster: dict[str, float], cli_limit: int | None) -> int:
        """The spec's limit, else the CLI's, else what the cluster can hold at once."""
        if self.max_concurrent:
            return self.max_concurrent
        if cli_limit:
            return cli_limit
        fits = [cluster.get("CPU", 1.0) / self.cpu] if self.cpu > 0 else []
        if self.gpu > 0:
            fits.append(cluster.get("GPU", 0.0) / self.gpu)
        return max(1, math.floor(min(fits)) if fits else 1)


def make_groups(
    todos: Sequence[TrialTodo], pack: int | bool | None, max_groups: int = MAX_TUNE_TRIALS
) -> list[list[TrialTodo]]:
    """Group unfinished trials for packing (``idemcore.packed.group_configs``) or not.

    With automatic packing (``pack`` unset) a sweep of small networks becomes at most
    about ``max_groups`` Tune trials: when the automatic pack size would make more, the
    packs grow to ``ceil(trials / max_groups)`` members, as far as memory allows
    (``auto_pack_size`` with a larger cap). 100,000 N1 trials: 100 Tune trials of 1,000.
    Trials that cannot be packed (large networks) stay one per Tune trial.
    """
    if pack is False or pack == 1 or len(todos) < 2:
        return [[todo] for todo in todos]
    from idemcore.packed import MEMORY_FRACTION, available_memory, group_configs, member_bytes

    configs = [todo.config for todo in todos]
    groups = group_configs(configs, pack)
    if pack is None and len(groups) > max_groups:
        wanted = -(-len(todos) // max_groups)
        largest = max(member_bytes(c) for c in configs)
        fits = int(available_memory() * MEMORY_FRACTION) // max(1, largest)
        size = max(1, min(wanted, fits))
        if size > max(len(g) for g in groups):
            groups = group_configs(configs, size)
    return [[todos[i] for i in group] for group in groups]


def trial_error(trial: Any) -> BaseException | str | None:
    """The last error of a Tune trial, read from the driver's copy of its error files.

    ``Trial.get_pickled_error`` reads from the storage path, which is synced later than
    ``on_trial_error`` runs; the local files are already written.
    """
    try:
        path = trial.pickled_error_file
        if path and os.path.exists(path):
            with open(path, "rb") as fh:
                exc = cloudpickle.load(fh)
            if isinstance(exc, BaseException):
                return exc
        path = trial.error_file
        if path and os.path.exists(path):
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            return lines[-1] if lines else None
    except Exception:  # an unreadable error file must not stop the status update
        log.exception("could not read the error of Tune trial %s", trial)
    return None


def error_text(exc: BaseException | str | None) -> str:
    """A one-line error for the trial row: the trainable's own exception, not Ray's wrapper."""
    if exc is None:
        return "trial failed (no error recorded by Ray Tune)"
    if isinstance(exc, str):
        return exc.strip()
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1] if text else ''}".strip()


def _member_ids(config: dict[str, Any]) -> list[int]:
    return [int(m["trial_id"]) for m in config.get(GROUP_KEY, [])]


def id_ranges(ids: Sequence[int], max_chars: int | None = None) -> str:
    """Store trial ids as short ranges: ``[12, 13, 14, 15, 20]`` → ``"12..15,20"``. Past
    ``max_chars`` the remaining ids are counted instead: ``"12..15,+7"``."""
    runs = [
        [v for _, v in run]
        for _, run in itertools.groupby(enumerate(sorted(ids)), key=lambda p: p[1] - p[0])
    ]
    parts: list[str] = []
    covered = 0
    for run in runs:
        part = str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}"
        if max_chars is not None and parts and len(",".join([*parts, part])) > max_chars:
            return ",".join([*parts, f"+{len(ids) - covered}"])
        parts.append(part)
        covered += len(run)
    return ",".join(parts)


MAX_NAME_IDS = 120  # characters of ids in a Tune trial name (dirnames stay well under 255)


def trial_name(trial: Any) -> str:
    """Tune trial names that name the store's trials, so a trial in the Ray dashboard is
    found in the store and back: ``trial-12_<tune id>`` for one run, and
    ``pack-12..15,20_<tune id>`` for a pack (every member's store id, as ranges)."""
    ids = _member_ids(trial.config)
    if len(ids) <= 1:
        return f"trial-{ids[0] if ids else 'none'}_{trial.trial_id}"
    return f"pack-{id_ranges(ids, MAX_NAME_IDS)}_{trial.trial_id}"


def actor_ip(trial: Any) -> str | None:
    """The IP of the Ray node whose actor runs ``trial`` (stored as ``trial.node_ip``, so a
    sweep on a cluster shows where each attempt ran); None when Ray cannot say."""
    try:
        ip = trial.get_ray_actor_ip()
    except Exception:  # the actor died already: its next attempt records the new node
        return None
    return str(ip) if ip else None


class StopFlag(tune.Stopper):
    """A Tune Stopper that ends the whole run when ``event`` is set (cancel, SIGTERM).

    Tune checks ``stop_all`` every controller step (~0.1 s). Pickled with the Tuner's
    state for restores: the live event is not part of that state.
    """

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.event.is_set()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.event = threading.Event()


class StoreCallback(tune.Callback):
    """Tune callback (driver side): batches and final states go to the store.

    ``finished`` holds the store trial ids whose final state this run wrote.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.finished: set[int] = set()
        self.rows_written = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"finished": set(), "rows_written": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        ids = [i for i in _member_ids(trial.config) if i not in self.finished]
        ip = actor_ip(trial)
        in_transaction(self.engine, lambda s: mark_trials_running(s, ids, node_ip=ip))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.write_result(result)

    def write_result(self, result: dict[str, Any]) -> None:
        """One transaction: every batch's epoch rows, then every final state."""
        batches = {
            int(b["trial_id"]): [EpochRecord(**r) for r in b["records"]]
            for b in result.get("batch") or []
        }
        finals = {int(f["trial_id"]): f for f in result.get("final") or []}

        def write(session: Session) -> int:
            rows = 0
            for tid, records in batches.items():
                if tid not in finals and tid not in self.finished:
                    rows += append_epochs(session, tid, records)
            for tid, final in finals.items():
                if tid in self.finished:
                    continue
                result_ = None
                if final.get("result") is not None:
                    res = dict(final["result"])
                    if res.get("eigenvalues") is not None:
                        res["eigenvalues"] = [tuple(v) for v in res["eigenvalues"]]
                    result_ = TrialResult(**res)
                finish_trial(
                    session,
                    tid,
                    TrialStatus(final["status"]),
                    result_,
                    final.get("error"),
                    records=batches.get(tid, []),
                    repeat_ok=True,  # a retry after a lost commit reply
                    provenance=final.get("provenance"),
                    reuse_key=final.get("reuse_key"),
                )
            pause_point("epochs-before-commit")  # tests only (service/faultpoints.py)
            return rows

        self.rows_written += in_transaction(self.engine, write, what="epoch batch")
        pause_point("epochs-after-commit")
        self.finished.update(finals)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.fail(_member_ids(trial.config), error_text(trial_error(trial)))

    def fail(self, trial_ids: Sequence[int], error: str) -> None:
        """Members not finished yet end ``failed`` with ``error``."""
        ids = [i for i in trial_ids if i not in self.finished]
        if not ids:
            return

        def write(session: Session) -> None:
            for tid in ids:
                finish_trial(session, tid, TrialStatus.failed, None, error, repeat_ok=True)

        in_transaction(self.engine, write, what="failed trials")
        self.finished.update(ids)


@dataclass
class SweepRunResult:
    """What happened to one Tune run of a sweep."""

    experiment: str
    tune_trials: int
    finished: set[int] = field(default_factory=set)
    stopped: bool = False
    seconds: float = 0.0


def experiment_name(sweep_id: int) -> str:
    """Unique per run: a resumed sweep starts a fresh Tune experiment."""
    return f"sweep-{sweep_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_sweep(
    engine: Engine,
    settings: Settings,
    sweep_id: int,
    stored_spec: dict[str, Any],
    *,
    experiment: str,
    stop: threading.Event,
    max_concurrent: int | None = None,
    verbose: int = 0,
) -> SweepRunResult:
    """A claimed sweep's run, as both runners do it (the worker in process, or a Ray
    Job's driver): its stored spec through SweepSpec, its unfinished trials, one Tune
    experiment."""
    spec = load_spec(sweep_id, stored_spec)
    todos = in_transaction(engine, lambda s: unfinished_trials(s, sweep_id), what="sweep start")
    return run_tune(
        engine,
        sweep_id=sweep_id,
        spec=spec,
        todos=todos,
        data_dir=settings.data_dir,
        report_every=settings.report_every,
        stop=stop,
        experiment=experiment,
        cli_max_concurrent=max_concurrent,
        verbose=verbose,
    )


def run_tune(
    engine: Engine,
    *,
    sweep_id: int,
    spec: SweepSpec,
    todos: Sequence[TrialTodo],
    data_dir: Path,
    report_every: int,
    stop: threading.Event,
    experiment: str,
    cli_max_concurrent: int | None = None,
    verbose: int = 0,
) -> SweepRunResult:
    """Run ``todos`` as one Tune experiment; returns when every Tune trial ended or
    ``stop`` was set. Trials needing a GPU the cluster lacks fail at once (no hang).
    ``verbose`` is Tune's (1: its status table, which a Ray Job's logs show)."""
    import ray

    # Tune's automatic CSV/JSON/TensorBoard loggers would copy every epoch batch into
    # result files (and warn about the nested batch): the store is the record.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    started = time.perf_counter()
    plan = RunPlan.from_spec(spec)
    callback = StoreCallback(engine)
    outcome = SweepRunResult(experiment=experiment, tune_trials=0, finished=callback.finished)
    if not todos:
        return outcome
    cluster = ray.cluster_resources()
    if plan.gpu > 0 and cluster.get("GPU", 0.0) < plan.gpu:
        callback.fail(
            [t.id for t in todos],
            f"CUDA not available: the trials ask for gpu={plan.gpu} but the Ray cluster "
            f"has {cluster.get('GPU', 0.0):g} GPUs",
        )
        return outcome
    groups = make_groups(todos, plan.pack)
    outcome.tune_trials = len(groups)
    log.info(
        "sweep %s: %d store trials in %d Tune trials (grouped %.2f s after the claim)",
        sweep_id,
        len(todos),
        len(groups),
        time.perf_counter() - started,
    )
    param_space = {
        GROUP_KEY: tune.grid_search(
            [[{"trial_id": t.id, "config": t.config.to_dict()} for t in g] for g in groups]
        ),
        REPORT_EVERY_KEY: report_every,
        RECORD_EVERY_KEY: plan.record_every,
        GPU_KEY: plan.gpu,
    }
    from workers.trainable import train_group

    tuner = tune.Tuner(
        tune.with_resources(train_group, plan.resources()),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=plan.concurrency(cluster, cli_max_concurrent),
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(data_dir.resolve() / "ray_results"),
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            stop=StopFlag(stop),
            callbacks=[callback],
            verbose=verbose,
        ),
    )
    # Tune's result files are off (the store holds the results), so the ResultGrid's
    # "Failed to fetch metrics ... result.json and progress.csv were not found" warning,
    # one line per trial, says nothing: keep it out of worker.log.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    grid = tuner.fit()  # does not raise on trial errors: the grid holds them
    outcome.stopped = stop.is_set()
    if not outcome.stopped:
        # Belt and braces: a Tune trial that ended without a final report (or whose
        # error the callback missed) must not leave its members unfinished.
        for index in range(len(grid)):
            result = grid[index]
            ids = _member_ids(result.config or {})
            if result.error is not None:
                callback.fail(ids, error_text(result.error))
            else:
                callback.fail(ids, "the Tune trial ended without reporting a final result")
    outcome.seconds = time.perf_counter() - started
    log.info(
        "sweep %s: %d Tune trials, %d store trials finished, %d epoch rows, %.1f s",
        sweep_id,
        outcome.tune_trials,
        len(callback.finished),
        callback.rows_written,
        outcome.seconds,
    )
    return outcome
