"""Results: grouped summaries and paired comparisons, aggregated in SQL by the store.

``by`` and ``metric`` are checked against the store's whitelists here, so an unknown
name is a 422 naming the query parameter and never reaches SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from service import comparison
from service.deps import ReadSessionDep, SweepId
from service.exceptions import NotFound, QueryFieldError
from service.routes.errors import errors
from service.schemas import ComparePublic, CompareRowPublic, SummaryPublic, SummaryRowPublic
from service.spec import ALGORITHM_NAMES, INT32_MAX
from service.store import queries
from service.store import results as store_results
from service.store.query_fields import COMPARE_GROUP, EPOCH_METRICS, METRICS, TRIAL_FIELDS
from service.store.records import CompareRow
from service.store.status import TrialStatus

router = APIRouter(prefix="/sweeps", tags=["results"])

ERRORS = errors(
    own={
        404: "no such sweep, or the metric is not kept that way (per epoch / per run)",
        422: "unknown field or metric (loc names it)",
    }
)
DEFAULT_BY = "architecture,algorithm,learning_rate,batch_size"
# Runs that ended with a result; a pair with a pending, failed or cancelled run is left out.
RESULT_STATUSES = frozenset({TrialStatus.succeeded, TrialStatus.diverged})


# ``by``: comma-separated field names, as a pattern so the schema names every field.
_FIELD = "(" + "|".join(TRIAL_FIELDS) + ")"
BY_PATTERN = f"^{_FIELD}(,{_FIELD})*$"
# Every metric a summary or comparison may name: final ones, and per-epoch ones (epoch=).
ANY_METRIC: tuple[str, ...] = tuple(dict.fromkeys((*METRICS, *EPOCH_METRICS)))


def parse_by(by: str) -> list[str]:
    """The comma-separated group fields, each checked against the store's whitelist; a
    field named twice counts once."""
    fields = list(dict.fromkeys(f.strip() for f in by.split(",") if f.strip()))
    if not fields:
        raise QueryFieldError(["query", "by"], "name at least one field")
    for field in fields:
        if field not in TRIAL_FIELDS:
            raise QueryFieldError(
                ["query", "by"],
                f"unknown field {field!r}; expected any of {sorted(TRIAL_FIELDS)}",
            )
    return fields


def check_metric(
    metric: str, per_epoch: bool = False, advertised: Sequence[str] = ANY_METRIC
) -> str:
    """``metric`` if the store has it per epoch (``per_epoch``) or per run.

    A name outside the route's schema enum (``advertised``) is a 422 naming the
    parameter; a metric the schema allows but the store does not keep that way
    (``epochs_to_threshold`` per epoch, ``seconds`` per run, where one ``metric`` serves
    both through ``epoch=``) is a 404: those values do not exist."""
    if metric not in advertised:
        raise QueryFieldError(
            ["query", "metric"], f"unknown metric {metric!r}; expected one of {list(advertised)}"
        )
    allowed = EPOCH_METRICS if per_epoch else METRICS
    if metric not in allowed:
        kind = "per-epoch" if per_epoch else "final (per-run)"
        raise NotFound(f"{metric} has no {kind} values; {kind} metrics: {list(allowed)}")
    return metric


def metric_query(names: Sequence[str], what: str) -> Any:
    """A ``metric`` query parameter whose schema lists ``names``."""
    return Query(description=what, json_schema_extra={"enum": list(names)})


Metric = Annotated[
    str,
    metric_query(ANY_METRIC, "a final metric, or a per-epoch one with epoch="),
]
By = Annotated[
    str,
    Query(pattern=BY_PATTERN, description="comma-separated config fields forming a group"),
]
Algorithm = Annotated[
    str, Query(description="an algorithm", json_schema_extra={"enum": list(ALGORITHM_NAMES)})
]
Epoch = Annotated[int | None, Query(ge=1, le=INT32_MAX, description="the metric at this epoch")]


@router.get("/{sweep_id}/summary", responses=ERRORS)
def summary(
    sweep_id: SweepId,
    session: ReadSessionDep,
    by: By = DEFAULT_BY,
    metric: Metric = "idempotent_error",
    epoch: Epoch = None,
) -> SummaryPublic:
    """One row per group: n, mean, sample std, min, median, max, diverged, never."""
    fields = parse_by(by)
    check_metric(metric, per_epoch=epoch is not None)
    queries.get_sweep(session, sweep_id)
    rows = store_results.summary(session, sweep_id, by=fields, metric=metric, epoch=epoch)
    data = [SummaryRowPublic.from_record(r) for r in rows]
    return SummaryPublic(
        sweep_id=sweep_id, by=fields, metric=metric, epoch=epoch, data=data, count=len(data)
    )


def group_pairs(rows: Sequence[CompareRow]) -> list[tuple[dict[str, Any], list[CompareRow]]]:
    """The pairs per group of the other factors (the store's group plus the init scheme:
    runs from different inits are different conditions, not replicates), in store order."""
    groups: dict[tuple[tuple[str, Any], ...], tuple[dict[str, Any], list[CompareRow]]] = {}
    for row in rows:
        group = {**row.group, "init": row.init}
        key = tuple(sorted(group.items()))
        groups.setdefault(key, (group, []))[1].append(row)
    return list(groups.values())


@router.get("/{sweep_id}/compare", responses=ERRORS)
def compare(
    sweep_id: SweepId,
    session: ReadSessionDep,
    a: Algorithm = "modified",
    b: Algorithm = "ordinary",
    metric: Metric = "idempotent_error",
    epoch: Epoch = None,
) -> ComparePublic:
    """Runs of ``a`` and ``b`` that agree on everything but the algorithm, paired by seed;
    per group of the other factors the comparison engine's numbers (service.comparison):
    wins, ties, the median transformed difference with its bootstrap interval, the
    Wilcoxon signed-rank p and, Holm-corrected over this response's groups, the verdict.

    Only pairs where both runs ended with a result (succeeded or diverged) count. A run
    without a value (diverged, or never reached the threshold) is worse than any value and
    stays in the test (metrics without a direction leave such pairs out).
    """
    for name, value in (("a", a), ("b", b)):
        if value not in ALGORITHM_NAMES:
            raise QueryFieldError(
                ["query", name], f"unknown algorithm {value!r}; expected one of {ALGORITHM_NAMES}"
            )
    check_metric(metric, per_epoch=epoch is not None)
    queries.get_sweep(session, sweep_id)
    rows = [
        r
        for r in store_results.compare_rows(session, sweep_id, a=a, b=b, metric=metric, epoch=epoch)
        if r.a_status in RESULT_STATUSES and r.b_status in RESULT_STATUSES
    ]
    groups = group_pairs(rows)
    results = [compare_group(pairs, metric) for _, pairs in groups]
    corrected = comparison.holm([r.p for r in results])
    data = [
        CompareRowPublic(
            **group,
            **CompareRowPublic.stats_of(r, pc, comparison.verdict(r, pc)),
        )
        for (group, _), r, pc in zip(groups, results, corrected, strict=True)
    ]
    rule = comparison.rule(metric)
    return ComparePublic(
        sweep_id=sweep_id,
        a=a,
        b=b,
        metric=metric,
        epoch=epoch,
        better=rule.better,
        transform=rule.transform,
        alpha=comparison.ALPHA,
        by=[*COMPARE_GROUP, "init"],
        data=data,
        count=len(data),
    )


def compare_group(pairs: Sequence[CompareRow], metric: str) -> comparison.Paired:
    """The engine over one group's pairs (a diverged run's value read as the engine says)."""
    diverged = TrialStatus.diverged
    return comparison.compare(
        [comparison.run_value(p.a_value, p.a_status == diverged, metric) for p in pairs],
        [comparison.run_value(p.b_value, p.b_status == diverged, metric) for p in pairs],
        metric,
    )
