"""The API's pydantic contract: what each route returns.

The store hands back frozen dataclasses (``service.store.records``); each ``*Public`` model
here is built from one explicitly (``from_record``), so a storage column never leaks into
the API by accident and a renamed column fails loudly here.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Self, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from idemcore.records import Metrics
from service.store.records import ConfigColumns

if TYPE_CHECKING:
    from service.comparison import Paired
    from service.report.claims import ClaimRow
    from service.store.records import EpochRow, SummaryRow, SweepRecord, TrialRecord

Better = Literal["lower", "higher"] | None


class ErrorDetail(BaseModel):
    """One problem with a request: where (``loc``), what (``msg``) and, for limits, the limit."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(default_factory=list, description="field path, e.g. body.epochs")
    msg: str = Field(description="what is wrong")
    type: str = Field(description="error kind")


class ErrorPublic(BaseModel):
    """Every error body: a message, or a list of field problems (422)."""

    detail: str | list[ErrorDetail]


class SkippedPair(BaseModel):
    """An (architecture, algorithm) pair left out of the grid because it cannot train."""

    architecture: str
    algorithm: str
    reason: str


class SweepCreated(BaseModel):
    """The answer to ``POST /sweeps`` (also replayed for a retried Idempotency-Key)."""

    id: int
    status: str
    trial_count: int = Field(description="trials in the sweep")
    reused_trials: int = Field(description="trials whose result was taken over from the store")
    skipped: list[SkippedPair] = Field(description="pairs left out (with skip_invalid)")


class SweepPublic(BaseModel):
    """A sweep with its progress (``GET /sweeps/{id}``)."""

    id: int
    name: str
    status: str
    priority: int
    trial_count: int
    trials_by_status: dict[str, int] = Field(description="trial count per trial status")
    progress: float = Field(ge=0, le=1, description="fraction of trials in a final state")
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    error: str | None
    ray_experiment: str | None
    ray_dashboard_url: str | None = Field(
        description="the sweep's Ray Job in the Ray dashboard (its Jobs page, with logs)"
    )
    ray_job_id: str | None = Field(
        description="the Ray Job's submission id (`ray job status ID`), null before one runs"
    )
    attempt: int = Field(ge=0, description="claims so far: 1 on the first run, +1 per resume")
    spec: dict[str, Any] = Field(description="the submitted spec")

    @classmethod
    def from_record(cls, r: SweepRecord) -> SweepPublic:
        """Convert the store's frozen record: each field is the record's attribute of the
        same name (the status as text)."""
        values = {name: getattr(r, name) for name in cls.model_fields}
        return cls(**{**values, "status": str(r.status)})


class SweepsPublic(BaseModel):
    """One page of sweeps and the total count matching the filter."""

    data: list[SweepPublic]
    count: int


class CancelAccepted(BaseModel):
    """The answer to ``POST /sweeps/{id}/cancel`` (202)."""

    id: int
    status: str = Field(description="the sweep status right after the request")
    cancel_requested: bool = True


class SweepDeletedPublic(BaseModel):
    """The answer to ``DELETE /sweeps/{id}``: what was removed."""

    id: int
    trials: int = Field(description="trials deleted")
    epochs: int = Field(description="epoch rows deleted")


class ProvenancePublic(BaseModel):
    """What computed a trial's result (``idemcore.provenance.Provenance``; null until the
    trial finished; a reused trial shows its source's)."""

    code_fingerprint: str | None = Field(
        default=None, description="sha256 of idemcore's source files that ran"
    )
    idemsweep_version: str | None = Field(default=None, description="installed idemsweep")
    torch_version: str | None = Field(default=None, description="torch.__version__")
    python_version: str | None = Field(default=None, description="e.g. 3.11.9")
    device: str | None = Field(default=None, description="'cpu: <model>' or 'cuda: <GPU>'")
    tf32: bool | None = Field(default=None, description="whether TF32 matmuls were allowed")
    host: str | None = Field(default=None, description="hostname of the machine")
    ray_node_id: str | None = Field(default=None, description="Ray node id (null outside Ray)")
    packed: bool | None = Field(default=None, description="trained in a pack with others")
    pack_id: int | None = Field(default=None, description="the pack's first trial id")

    @staticmethod
    def provenance_fields(r: TrialRecord) -> dict[str, Any]:
        """The record's provenance as these fields (all null when none was recorded)."""
        return {
            name: getattr(r.provenance, name) if r.provenance else None
            for name in ProvenancePublic.model_fields
        }


def _fields_of(record: type) -> dict[str, Any]:
    """A dataclass's fields as required pydantic fields of the same names and types."""
    hints = get_type_hints(record)
    return {f.name: (hints[f.name], ...) for f in fields(record)}


# Models whose fields are another declaration's, made at run time: the metrics measured
# every epoch (their final values on a trial), idemcore's ``Metrics``, and a trial's
# config columns, the store's ``ConfigColumns``. A model that lists such a base first and
# another one after it (``class EpochPublic(MetricsPublic, EpochKey)``) gets the other
# base's fields first: pydantic orders fields by the reversed MRO.
if TYPE_CHECKING:  # fields made at run time are beyond static checkers

    class MetricsPublic(BaseModel):
        """The metrics (idemcore.records.Metrics)."""

    class ConfigColumnsPublic(BaseModel):
        """The config columns (service.store.records.ConfigColumns)."""

else:
    MetricsPublic = create_model("MetricsPublic", **_fields_of(Metrics))
    ConfigColumnsPublic = create_model("ConfigColumnsPublic", **_fields_of(ConfigColumns))


class TrialPublic(ProvenancePublic, MetricsPublic, ConfigColumnsPublic):
    """One run: its config columns, status, final metrics and provenance."""

    id: int
    sweep_id: int
    status: str
    config: dict[str, Any] = Field(description="the full resolved TrialConfig")
    attempts: int
    epochs_to_threshold: int | None = Field(description="null when never reached")
    epochs_run: int | None
    wall_seconds: float | None
    error: str | None
    reused_from: int | None = Field(description="the trial whose result this one took over")
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, r: TrialRecord) -> Self:
        """Convert the store's frozen record: each field is the record's attribute of the
        same name (the status as text, the provenance spread over its own fields)."""
        provenance = cls.provenance_fields(r)
        values = {name: getattr(r, name) for name in cls.model_fields if name not in provenance}
        values["status"] = str(r.status)
        return cls(**values, **provenance)


class TrialDetail(TrialPublic):
    """One run with its final analysis (eigenvalues etc.) and where it ran."""

    result: dict[str, Any] | None = Field(description="the full TrialResult")
    node_ip: str | None


class TrialsPublic(BaseModel):
    """One page of a sweep's trials and the total count matching the filters."""

    data: list[TrialPublic]
    count: int = Field(description="trials matching the filters (all pages)")
    next_after_id: int | None = Field(
        default=None, description="pass as after_id for the next page; null on the last page"
    )


class EpochKey(BaseModel):
    """Which epoch a row is (1-based)."""

    epoch: int


class EpochPublic(MetricsPublic, EpochKey):
    """The metrics after one epoch: epoch, the metrics, seconds."""

    seconds: float | None

    @classmethod
    def from_record(cls, r: EpochRow) -> EpochPublic:
        """Convert the store's frozen record (fields of the same names)."""
        return cls(**{name: getattr(r, name) for name in cls.model_fields})


class EpochsPublic(BaseModel):
    """A trial's curve, every ``stride``-th epoch."""

    trial_id: int
    stride: int
    record_every: int = Field(
        default=1,
        description="the sweep stored every k-th epoch, plus the first, the one that "
        "crossed the threshold and the last (spec record_every); data lists those it has",
    )
    data: list[EpochPublic]
    count: int


class TrialKey(BaseModel):
    """Which trial a row belongs to."""

    trial_id: int


class SweepEpochKey(EpochKey, ConfigColumnsPublic, TrialKey):
    """The trial, its config columns and the epoch of a sweep's epoch row (in that order)."""


class SweepEpochPublic(MetricsPublic, SweepEpochKey):
    """One epoch row of a sweep: the trial, its config columns, the epoch, the metrics
    and seconds (the export's column order)."""

    seconds: float | None


class SweepEpochsPublic(BaseModel):
    """Every epoch row of a sweep's (filtered) trials, by trial and epoch (streamed)."""

    sweep_id: int
    data: list[SweepEpochPublic]
    count: int


class CurvePublic(BaseModel):
    """One group's curve: at each listed epoch, the runs counted, their mean and std."""

    group: dict[str, Any] = Field(description="the group's config fields")
    label: str = Field(description="the legend label the figure uses")
    epoch: list[int]
    n: list[int] = Field(description="succeeded runs with a value at that epoch")
    mean: list[float | None]
    std: list[float | None] = Field(description="sample std; null for one run")


class CurvesPublic(BaseModel):
    """The aggregated curves of ``GET /sweeps/{id}/plots/curves.png``, as data."""

    sweep_id: int
    metric: str
    by: list[str]
    stride: int
    data: list[CurvePublic]
    count: int


class SummaryRowPublic(BaseModel):
    """One group: the group's fields (e.g. ``architecture``, ``algorithm``) at the top
    level, then the statistics of ``metric`` over the group's runs."""

    model_config = ConfigDict(extra="allow")

    n: int = Field(description="runs with a value")
    mean: float | None
    std: float | None = Field(description="sample standard deviation (null for n < 2)")
    min: float | None
    median: float | None
    max: float | None
    diverged: int = Field(description="runs that diverged")
    never: int = Field(description="runs with no value (never reached the threshold)")

    @classmethod
    def from_record(cls, r: SummaryRow) -> SummaryRowPublic:
        """Convert the store's frozen record, lifting the group's fields to the top."""
        stats = asdict(r)
        return cls(**stats.pop("group"), **stats)


class SummaryPublic(BaseModel):
    """``GET /sweeps/{id}/summary``: one row per group."""

    sweep_id: int
    by: list[str]
    metric: str
    epoch: int | None = Field(description="the metric at this epoch; null = final")
    data: list[SummaryRowPublic]
    count: int


class PairedPublic(BaseModel):
    """One comparison of paired runs, as the comparison engine (service.comparison) made it."""

    pairs: int = Field(description="pairs in the test (same seed, everything else equal)")
    a_wins: int | None = Field(description="pairs where a is better (null: no direction)")
    b_wins: int | None = Field(description="pairs where b is better (null: no direction)")
    ties: int = Field(description="pairs whose transformed difference is within the tie rule")
    effect: float | None = Field(
        description="median paired difference a − b on the metric's scale (log10 ratio for "
        "errors and loss, plain difference otherwise); negative: a lower"
    )
    ci_low: float | None = Field(description="95% bootstrap interval of the effect, low end")
    ci_high: float | None = Field(description="95% bootstrap interval of the effect, high end")
    p: float | None = Field(
        description="two-sided Wilcoxon signed-rank p-value (null only without pairs)"
    )
    p_corrected: float | None = Field(
        description="p after Holm–Bonferroni over the family of tests in this response"
    )
    verdict: str = Field(
        description="holds (a better, corrected p < alpha), fails (b better), "
        "no difference shown, no pairs, or cannot be asked honestly"
    )

    @classmethod
    def stats_of(cls, paired: Paired, p_corrected: float | None, verdict: str) -> dict[str, Any]:
        """The engine's fields of ``paired`` as keyword arguments for a subclass."""
        return {
            "pairs": paired.pairs,
            "a_wins": paired.a_wins,
            "b_wins": paired.b_wins,
            "ties": paired.ties,
            "effect": paired.effect,
            "ci_low": paired.ci_low,
            "ci_high": paired.ci_high,
            "p": paired.p,
            "p_corrected": p_corrected,
            "verdict": verdict,
        }


class CompareRowPublic(PairedPublic):
    """One group of the other factors: paired runs of ``a`` and ``b`` (same seed, same
    everything but the algorithm) and their paired statistics."""

    model_config = ConfigDict(extra="allow")


class ComparePublic(BaseModel):
    """``GET /sweeps/{id}/compare``: a against b, per group of the other factors."""

    sweep_id: int
    a: str
    b: str
    metric: str
    epoch: int | None
    better: Better = Field(
        description="which direction wins: 'lower' (errors, epochs), or null for metrics "
        "without one (image_dim, norm, trace: only the difference is reported)"
    )
    transform: str = Field(description="the paired difference the test and the effect use")
    alpha: float = Field(description="a corrected p below this decides a row")
    by: list[str] = Field(description="the fields that form a group")
    data: list[CompareRowPublic]
    count: int


class ClaimRowPublic(PairedPublic):
    """One row of the report's answer table: one claim asked one way in one setting."""

    architecture: str
    samples: int = Field(description="samples n of the batch configuration")
    batch_size: int = Field(description="batch size m of the batch configuration")
    data: str
    init: str = Field(description="the init label, with its std and gain where they apply")
    optimizer: str = Field(description="the optimizer (sgd unless the sweep names others)")
    dimension: str = Field(
        description="what a and b are: 'algorithm', or two values of the grid dimension "
        "'data', 'optimizer' or 'init' (runs differing only there, paired by seed)"
    )
    algorithm: str | None = Field(
        description="a dimension row's algorithm (both sides ran it); null for algorithm rows"
    )
    a: str = Field(description="algorithm a, or value a of the dimension (the claim is about a)")
    b: str
    claim: Literal["a", "b"] = Field(
        description="a: as good or better idempotent error; b: fewer epochs to the threshold"
    )
    metric: str = Field(description="the metric the claim compares")
    way: Literal["equal_lr", "best_lr", "matched_step"]
    lr_a: float | None = Field(description="a's learning rate in these pairs")
    lr_b: float | None = Field(description="b's learning rate in these pairs")
    selection_seeds: list[int] | None = Field(
        default=None, description="best_lr: the seeds that chose each learning rate"
    )
    evaluation_seeds: list[int] | None = Field(
        default=None, description="best_lr: the seeds compared (disjoint from selection)"
    )
    null_map_share: float | None = Field(
        description="share of a's winning pairs where a's run collapsed to the null map"
    )

    @classmethod
    def from_row(cls, row: ClaimRow) -> ClaimRowPublic:
        q, s = row.question, row.setting
        return cls(
            **asdict(s),
            dimension=q.dimension,
            algorithm=q.algorithm,
            a=q.a,
            b=q.b,
            claim=q.claim.key,
            metric=q.claim.metric,
            way=q.way.value,
            lr_a=q.lr_a,
            lr_b=q.lr_b,
            selection_seeds=None if q.selection_seeds is None else list(q.selection_seeds),
            evaluation_seeds=None if q.evaluation_seeds is None else list(q.evaluation_seeds),
            null_map_share=row.null_map_share,
            **cls.stats_of(row.result, row.p_corrected, row.verdict.value),
        )


class ClaimsPublic(BaseModel):
    """``GET /sweeps/{id}/claims``: every row of the report's answer table."""

    sweep_id: int
    alpha: float = Field(description="a Holm-corrected p below this decides a row")
    null_map_share: float = Field(
        description="a holding row whose a-wins are more than this share null maps holds "
        "only via null maps"
    )
    data: list[ClaimRowPublic]
    count: int


class ReportBuilding(BaseModel):
    """``GET /sweeps/{id}/report`` while the page is built in the background (202)."""

    sweep_id: int
    status: Literal["building"] = "building"
    trials: int = Field(description="runs in the sweep")
    elapsed_s: float = Field(ge=0, description="seconds since the build started")
    retry_after_s: int = Field(ge=1, description="ask again after this many seconds")


class HealthPublic(BaseModel):
    """``GET /health``."""

    status: Literal["ok"]
    database: str = Field(description="the database backend (sqlite, postgresql)")
    version: str
