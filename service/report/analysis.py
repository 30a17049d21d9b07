"""The report's analysis: runs grouped into settings, solution kinds and step sizes.

A *setting* is everything but the algorithm, learning rate and seed: architecture, batch
configuration (samples n, batch size m), data, initialization and optimizer. Within a
setting the runs of two algorithms are paired by seed (same seed = same initial weights and
data); service.report.claims asks the note's claims of those pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

from service.report.kinds import KindCounts, count_kinds
from service.report.model import ReportData
from service.store.records import TrialRecord


@dataclass(frozen=True, order=True)
class Setting:
    """Everything about a run but its algorithm, learning rate and seed."""

    architecture: str
    samples: int
    batch_size: int
    data: str
    init: str
    optimizer: str = "sgd"

    @property
    def batch_label(self) -> str:
        kind = "full batch" if self.batch_size == self.samples else "small batch"
        return f"{kind} (n={self.samples}, m={self.batch_size})"

    def title(self) -> str:
        title = f"{self.architecture} · {self.batch_label} · {self.data} · init {self.init}"
        return title if self.optimizer == "sgd" else f"{title} · {self.optimizer}"

    @property
    def slug(self) -> str:
        raw = f"{self.architecture}-{self.samples}-{self.batch_size}-{self.data}-{self.init}"
        raw += "" if self.optimizer == "sgd" else f"-{self.optimizer}"
        return "".join(c if c.isalnum() or c in "-." else "_" for c in raw)


def setting_of(trial: TrialRecord) -> Setting:
    return Setting(
        trial.architecture,
        trial.samples,
        trial.batch_size,
        trial.data,
        trial.init,  # TrialConfig.init_label, stored by the store: gain included once
        trial.optimizer,
    )


@dataclass(frozen=True)
class SettingAnalysis:
    """One setting: its runs, solution kinds and first-epoch step sizes."""

    setting: Setting
    trials: tuple[TrialRecord, ...]
    algorithms: tuple[str, ...]
    learning_rates: tuple[float, ...]
    kinds: dict[tuple[str, float], KindCounts]
    kinds_by_algorithm: dict[str, KindCounts]
    steps: dict[tuple[str, float], float | None]
    _by_run: dict[tuple[str, float | None], list[TrialRecord]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Indexed once: runs() is asked per (algorithm, lr) many times per setting, and
        # a scan of the setting's trials each time is quadratic at 100,000 trials.
        for t in self.trials:
            self._by_run.setdefault((t.algorithm, t.learning_rate), []).append(t)
            self._by_run.setdefault((t.algorithm, None), []).append(t)

    def runs(self, algorithm: str, lr: float | None = None) -> list[TrialRecord]:
        """The setting's runs of ``algorithm`` (at ``lr``, or at every learning rate)."""
        return list(self._by_run.get((algorithm, lr), ()))


def first_step(data: ReportData, trial: TrialRecord) -> float | None:
    """The run's first-epoch ``update_norm`` (its effective step size at the start)."""
    rows = data.epochs.get(trial.id, ())
    return rows[0].update_norm if rows and rows[0].epoch == 1 else None


def _median_step(data: ReportData, runs: Sequence[TrialRecord]) -> float | None:
    steps = [s for t in runs if (s := first_step(data, t)) is not None and s > 0]
    return median(steps) if steps else None


def analyse_setting(
    data: ReportData, setting: Setting, trials: list[TrialRecord]
) -> SettingAnalysis:
    """Kinds and step sizes for the runs of one setting."""
    algorithms = tuple(sorted({t.algorithm for t in trials}, key=_algorithm_order))
    lrs = tuple(sorted({t.learning_rate for t in trials}))
    index = SettingAnalysis(setting, tuple(trials), algorithms, lrs, {}, {}, {})
    kinds = {
        (alg, lr): count_kinds(index.runs(alg, lr), data.threshold)
        for alg in algorithms
        for lr in lrs
    }
    by_alg = {alg: count_kinds(index.runs(alg), data.threshold) for alg in algorithms}
    steps = {(alg, lr): _median_step(data, index.runs(alg, lr)) for alg in algorithms for lr in lrs}
    return SettingAnalysis(setting, tuple(trials), algorithms, lrs, kinds, by_alg, steps)


def _algorithm_order(name: str) -> tuple[int, str]:
    order = {"modified": 0, "ordinary": 1, "m1": 2}
    return (order.get(name, 9), name)


def analyse(data: ReportData) -> list[SettingAnalysis]:
    """Every setting of the sweep, in a stable order (architecture, batch, data, init)."""
    groups: dict[Setting, list[TrialRecord]] = defaultdict(list)
    for trial in data.trials:
        groups[setting_of(trial)].append(trial)
    ordered = sorted(
        groups,
        key=lambda s: (s.architecture, s.samples, -s.batch_size, s.data, s.init, s.optimizer),
    )
    return [analyse_setting(data, s, groups[s]) for s in ordered]
