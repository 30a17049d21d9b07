"""Questions across the grid's other dimensions: data, optimizer, init.

A sweep whose ``data``, ``optimizers`` or ``inits`` has more than one value holds runs that
differ in that one dimension only: the same architecture, batch, algorithm, learning rate
and seed (the same initialization and, per source, the same data draws). Those runs pair
by seed exactly like modified against ordinary, so each pair of values of a dimension
becomes questions of the same shape (:class:`service.report.claims.Question`, asked
``equal_lr``: one row per algorithm and learning rate) and is answered by the same engine
with the same Holm correction, in the same table (``GET /sweeps/{id}/claims``, the report).

For a dimension row, ``a`` and ``b`` are the two values compared (in the sweep's order, so
``data: [gaussian-fresh, gaussian-fixed]`` asks whether fresh data gives as good or better
error than fixed data), ``algorithm`` the algorithm both sides ran, and ``setting`` the
setting of a's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations

from service.report.analysis import Setting, SettingAnalysis
from service.report.claims import CLAIMS, Question, Way, pair_by_seed

# Fields of a Setting that a sweep can vary as a grid dimension (beyond the algorithm).
DIMENSIONS: tuple[str, ...] = ("data", "optimizer", "init")


def levels(settings: Sequence[SettingAnalysis], dimension: str) -> list[str]:
    """The values of ``dimension`` in the sweep, in grid order (first trial id first)."""
    first: dict[str, int] = {}
    for sa in settings:
        value = getattr(sa.setting, dimension)
        lowest = min(t.id for t in sa.trials)
        first[value] = min(first.get(value, lowest), lowest)
    return sorted(first, key=first.__getitem__)


def _without(setting: Setting, dimension: str) -> Setting:
    """The setting with ``dimension`` blanked: settings that differ only there share it."""
    if dimension == "data":
        return replace(setting, data="")
    if dimension == "optimizer":
        return replace(setting, optimizer="")
    return replace(setting, init="")


def dimension_questions(settings: Sequence[SettingAnalysis]) -> list[Question]:
    """Every question comparing two values of a dimension with more than one value: per
    group of otherwise equal settings, per algorithm and learning rate both sides ran,
    both claims. Ordered by dimension, group (the report's setting order), value pair,
    algorithm, learning rate, claim."""
    out: list[Question] = []
    for dimension in DIMENSIONS:
        values = levels(settings, dimension)
        if len(values) < 2:
            continue
        groups: dict[Setting, dict[str, SettingAnalysis]] = {}
        for sa in settings:
            key = _without(sa.setting, dimension)
            groups.setdefault(key, {})[getattr(sa.setting, dimension)] = sa
        for by_value in groups.values():
            for va, vb in combinations([v for v in values if v in by_value], 2):
                sa, sb = by_value[va], by_value[vb]
                for algorithm in [a for a in sa.algorithms if a in sb.algorithms]:
                    rates = [
                        lr
                        for lr in sa.learning_rates
                        if sa.runs(algorithm, lr) and sb.runs(algorithm, lr)
                    ]
                    for lr in rates:
                        pairs = tuple(pair_by_seed(sa.runs(algorithm, lr), sb.runs(algorithm, lr)))
                        out += [
                            Question(
                                sa.setting,
                                va,
                                vb,
                                claim,
                                Way.equal_lr,
                                lr,
                                lr,
                                pairs,
                                dimension=dimension,
                                algorithm=algorithm,
                            )
                            for claim in CLAIMS
                        ]
    return out
