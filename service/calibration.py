"""Step calibration as a request and an answer: the body of ``POST /calibrate`` and of
``idem calibrate``, and the table both print.

The measuring is idemcore's (:mod:`idemcore.calibrate`: one update per algorithm,
learning rate and seed). Here a request is validated (pydantic for shapes, then the
architecture and algorithm against idemcore, then the API's size bounds), run, and
turned into the matched pairs and, with ``suggest``, a per-algorithm learning-rate
mapping measured once more to show that its steps match.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from service.exceptions import SpecFieldError, SpecLimitError
from service.spec import (
    AlgorithmName,
    ArchitectureName,
    LayerList,
    OptimizerName,
    PositiveFinite,
    PositiveInt,
    SeedList,
    StrictModel,
    architecture_value,
    check_samples_x_dim,
    check_seeds,
    no_duplicates,
    seed_list,
    strip_field,
)

if TYPE_CHECKING:
    from idemcore.calibrate import StepSize
    from service.settings import Settings

# Bounds of one synchronous POST /calibrate (the CLI, on the user's own machine, has none).
MAX_STEPS = 96  # updates measured: algorithms × learning rates × seeds (× 2 with suggest)
MAX_SEEDS = 10
MAX_LEARNING_RATES = 16
MAX_PARAMETERS = 20_000_000  # B3 has 8.4 million
# steps × parameters × batch_size: B3 with 2 algorithms × 3 rates × 3 seeds, suggest, batch
# 100 is 3e10 (about 40 s on a loaded 2-core CPU).
MAX_WORK = 100_000_000_000
DEFAULT_BATCH_SIZE = 100


class CalibrateRequest(StrictModel):
    """One step from each seed's initialization per (algorithm, learning rate)."""

    architecture: ArchitectureName | LayerList = Field(
        description="a named network (N1..N4, B1..B4) or a custom layer list"
    )
    algorithms: list[AlgorithmName] = Field(
        default=["modified", "ordinary"], min_length=1, description="algorithms to measure"
    )
    learning_rates: list[PositiveFinite] = Field(
        min_length=1, max_length=MAX_LEARNING_RATES, description="learning rates to measure"
    )
    batch_size: Annotated[
        PositiveInt,
        Field(description="samples in the one batch (the step's size barely depends on it)"),
    ] = DEFAULT_BATCH_SIZE
    optimizer: Annotated[OptimizerName, Field(description="the optimizer taking the step")] = "sgd"
    seeds: SeedList | Annotated[int, Field(ge=1, le=MAX_SEEDS)] = Field(
        default=3, description="seeds, or a count n meaning 0..n-1 (a seed fixes the init)"
    )
    suggest: Annotated[
        bool,
        Field(description="also suggest a per-algorithm mapping with matching steps"),
    ] = False

    @field_validator("algorithms", "learning_rates")
    @classmethod
    def _unique(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        no_duplicates(values)
        return values

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | int) -> list[int] | int:
        return check_seeds(value, most=MAX_SEEDS)

    def seed_list(self) -> list[int]:
        """The seeds, with a count ``n`` meaning ``0..n-1``."""
        return seed_list(self.seeds)

    def steps(self) -> int:
        """Updates this request measures (the suggestion measures its mapping again)."""
        n = len(self.algorithms) * len(self.learning_rates) * len(self.seed_list())
        return n * 2 if self.suggest else n


class StepRow(BaseModel):
    """The first-step update norm of one algorithm at one learning rate."""

    algorithm: str
    learning_rate: float
    median: float | None = Field(description="median ||Δθ|| over the seeds (null: not finite)")
    norms: list[float | None] = Field(description="||Δθ|| per seed, in seed order")


class RatioRow(BaseModel):
    """Algorithm a's step divided by b's at the same learning rate."""

    a: str
    b: str
    learning_rate: float
    ratio: float | None


class MatchedPair(BaseModel):
    """Learning rates of a and b whose steps agree within the match factor."""

    a: str
    b: str
    a_learning_rate: float
    b_learning_rate: float
    ratio: float = Field(description="a's step / b's step")


class Suggestion(BaseModel):
    """A per-algorithm learning-rate mapping (a spec's ``learning_rates``) and the ratio of
    each algorithm's measured step to the reference's at each position."""

    reference: str = Field(description="the algorithm that keeps the given learning rates")
    learning_rates: dict[str, list[float]]
    ratios: dict[str, list[float | None]]
    factor: float = Field(description="steps count as matching within this factor")
    matches: bool


class CalibrationPublic(BaseModel):
    """What one calibration measured and what follows from it."""

    architecture: str
    dimension: int
    parameters: int
    batch_size: int
    optimizer: str
    seeds: list[int]
    match_factor: float
    steps: list[StepRow]
    ratios: list[RatioRow] = Field(description="step ratios at equal learning rate")
    matched: list[MatchedPair]
    suggestion: Suggestion | None
    seconds: float


def _loc(*parts: str | int) -> list[str | int]:
    return ["body", *parts]


def _architecture(request: CalibrateRequest) -> Any:
    """The request's architecture for idemcore, checked for every requested algorithm."""
    from idemcore.config import TrialConfig
    from idemcore.errors import ConfigError

    arch = architecture_value(request.architecture)
    for i, algorithm in enumerate(request.algorithms):
        try:
            TrialConfig(
                architecture=arch,
                algorithm=algorithm,
                learning_rate=request.learning_rates[0],
                samples=request.batch_size,
                batch_size=request.batch_size,
                epochs=1,
                seed=0,
                optimizer=request.optimizer,
            )
        except ConfigError as exc:
            message = strip_field(str(exc))
            field = str(exc).partition(":")[0]
            loc = _loc("algorithms", i) if field == "algorithm" else _loc("architecture")
            raise SpecFieldError(loc, message) from None
    return arch


def parameter_count(architecture: Any) -> int:
    """Trainable parameters of a named or custom architecture."""
    from idemcore.architectures import resolve_layers

    return sum(
        layer.in_features * layer.out_features + (layer.out_features if layer.bias else 0)
        for layer in resolve_layers(architecture)
    )


def check_limits(request: CalibrateRequest, settings: Settings) -> None:
    """The API's bounds on one synchronous calibration (422 naming the field and limit)."""
    from idemcore.architectures import input_dim

    arch = _architecture(request)
    if request.steps() > MAX_STEPS:
        raise SpecLimitError(
            _loc(),
            f"algorithms × learning_rates × seeds{' × 2 (suggest)' if request.suggest else ''}"
            f" = {request.steps()} steps",
            MAX_STEPS,
            "calibration steps",
        )
    params = parameter_count(arch)
    if params > MAX_PARAMETERS:
        raise SpecLimitError(
            _loc("architecture"), f"{params} parameters", MAX_PARAMETERS, "calibration parameters"
        )
    dim = input_dim(arch)
    what = f"batch_size × dimension = {request.batch_size} × {dim}"
    check_samples_x_dim(settings, _loc("batch_size"), request.batch_size * dim, what)
    work = request.steps() * params * request.batch_size
    if work > MAX_WORK:
        raise SpecLimitError(
            _loc("batch_size"),
            f"steps × parameters × batch_size = {request.steps()} × {params} × "
            f"{request.batch_size} = {work}",
            MAX_WORK,
            "calibration work",
        )


def _rows(sizes: list[StepSize]) -> list[StepRow]:
    return [
        StepRow(
            algorithm=s.algorithm,
            learning_rate=s.learning_rate,
            median=s.median,
            norms=list(s.norms),
        )
        for s in sizes
    ]


def run_calibration(request: CalibrateRequest) -> CalibrationPublic:
    """Measure the request's steps; the matched pairs, and the suggestion when asked."""
    from idemcore import calibrate
    from idemcore.architectures import input_dim

    arch = _architecture(request)
    started = time.perf_counter()
    seeds = request.seed_list()

    def measure(
        algorithms: list[str], rates: dict[str, list[float]] | list[float]
    ) -> list[StepSize]:
        return calibrate.measure(
            arch,
            algorithms,
            rates,
            seeds=seeds,
            batch_size=request.batch_size,
            optimizer=request.optimizer,
        )

    sizes = measure(list(request.algorithms), list(request.learning_rates))
    steps = calibrate.steps_by_algorithm(sizes)
    algorithms = list(request.algorithms)
    ordered = [(a, b) for i, a in enumerate(algorithms) for b in algorithms[i + 1 :]]
    ratios = [
        RatioRow(
            a=a,
            b=b,
            learning_rate=lr,
            ratio=(sa / sb) if (sa := steps[a][lr]) and (sb := steps[b][lr]) else None,
        )
        for a, b in ordered
        for lr in request.learning_rates
    ]
    matched = [
        MatchedPair(a=a, b=b, a_learning_rate=la, b_learning_rate=lb, ratio=r)
        for a, b in ordered
        for la, lb, r in calibrate.matched_pairs(steps[a], steps[b])
    ]
    suggestion = None
    if request.suggest and len(algorithms) > 1:
        mapping = calibrate.suggest(steps, request.learning_rates)
        again = measure(list(mapping), mapping)
        verified = calibrate.verify(mapping, steps, again)
        suggestion = Suggestion(
            reference=verified.reference,
            learning_rates=verified.mapping,
            ratios=verified.ratios,
            factor=calibrate.SUGGEST_FACTOR,
            matches=verified.matches,
        )
    label = request.architecture if isinstance(request.architecture, str) else "custom"
    return CalibrationPublic(
        architecture=label,
        dimension=input_dim(arch),
        parameters=parameter_count(arch),
        batch_size=request.batch_size,
        optimizer=request.optimizer,
        seeds=seeds,
        match_factor=calibrate.MATCH_FACTOR,
        steps=_rows(sizes),
        ratios=ratios,
        matched=matched,
        suggestion=suggestion,
        seconds=time.perf_counter() - started,
    )


def render_text(result: CalibrationPublic) -> str:
    """The calibration as terminal tables (rich): steps, ratios, matched pairs, suggestion."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    out = StringIO()
    console = Console(file=out, width=100, color_system=None)
    console.print(
        f"{result.architecture} (d = {result.dimension}, {result.parameters} parameters), "
        f"batch {result.batch_size}, {result.optimizer}, seeds {result.seeds}: "
        f"one step each, {result.seconds:.1f} s"
    )
    steps = Table("algorithm", "lr", "first-step ||Δθ|| (median)", "min", "max")
    for row in result.steps:
        finite = [n for n in row.norms if n is not None]
        steps.add_row(
            row.algorithm,
            f"{row.learning_rate:g}",
            _num(row.median),
            _num(min(finite) if finite else None),
            _num(max(finite) if finite else None),
        )
    console.print(steps)
    if result.ratios:
        ratios = Table("a / b", "lr", "step ratio")
        for r in result.ratios:
            ratios.add_row(f"{r.a} / {r.b}", f"{r.learning_rate:g}", _num(r.ratio))
        console.print(ratios)
    if result.matched:
        matched = Table(f"matched pairs (within ×{result.match_factor:g})", "lr a", "lr b", "ratio")
        for m in result.matched:
            matched.add_row(
                f"{m.a} / {m.b}", f"{m.a_learning_rate:g}", f"{m.b_learning_rate:g}", _num(m.ratio)
            )
        console.print(matched)
    else:
        console.print(f"no learning rates whose steps match within ×{result.match_factor:g}")
    s = result.suggestion
    if s is not None:
        verdict = "match" if s.matches else "do NOT all match"
        console.print(
            f"suggested learning_rates (reference {s.reference}; steps {verdict} within "
            f"×{s.factor:g}):"
        )
        mapping = ", ".join(
            f"{a}: [{', '.join(f'{r:g}' for r in rates)}]" for a, rates in s.learning_rates.items()
        )
        console.print(f"  learning_rates: {{{mapping}}}", soft_wrap=True)
        for algorithm, ratios_ in s.ratios.items():
            console.print(
                f"  measured step ratio {algorithm} / {s.reference}: "
                f"[{', '.join(_num(r) for r in ratios_)}]"
            )
    return out.getvalue()


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
