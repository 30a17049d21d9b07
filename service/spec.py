"""The sweep spec (the body of ``POST /sweeps``) and its expansion into trial configs.

``SweepSpec`` checks the shape of a spec (types, signs, finiteness, empty or duplicated
lists, a learning-rate mapping that matches ``algorithms``) with pydantic, so those errors
carry pydantic's field path. ``expand_grid`` then checks what needs idemcore or the
settings (architecture names, M1 pairing, the data files, the limits) and builds the grid
architecture × algorithm × learning rate (that algorithm's) × batch × data × optimizer ×
init × seed as ``TrialConfig`` objects, so runs that differ in one dimension only share
their seed and pair up. Every check runs before anything is stored; a
failure raises :class:`SpecFieldError` (or :class:`SpecLimitError`), which the API turns
into a 422 naming the field path (and the limit).

The API stores the validated spec (``model_dump(mode="json")``); the workers read it back
through ``SweepSpec.model_validate`` and take ``resources``, ``pack``, ``max_concurrent``
and ``max_failures`` from it (``workers.tune_runner.RunPlan.from_spec``).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from idemcore.architectures import ARCHITECTURES
from idemcore.config import ALGORITHMS, DATA_SOURCES, INITS, OPTIMIZERS
from service.exceptions import SpecFieldError, SpecLimitError

if TYPE_CHECKING:
    from idemcore.config import TrialConfig
    from service.settings import Settings

# Postgres INTEGER bounds: seeds and priorities are stored in integer columns.
INT32_MAX = 2**31 - 1

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1, le=INT32_MAX)]
Seed = Annotated[int, Field(ge=0, le=INT32_MAX)]

# The names a spec accepts: idemcore's declarations (idemcore.config, torch-free), as
# Literal types for validation and the OpenAPI schema (a file source is DataFile).
ALGORITHM_NAMES: tuple[str, ...] = ALGORITHMS
DATA_NAMES: tuple[str, ...] = tuple(name for name in DATA_SOURCES if name != "file")
INIT_NAMES: tuple[str, ...] = INITS
OPTIMIZER_NAMES: tuple[str, ...] = OPTIMIZERS
if TYPE_CHECKING:  # a Literal built from a tuple is beyond static checkers
    AlgorithmName: TypeAlias = str
    DataName: TypeAlias = str
    InitName: TypeAlias = str
    OptimizerName: TypeAlias = str
else:
    AlgorithmName = Literal[ALGORITHM_NAMES]
    DataName = Literal[DATA_NAMES]
    InitName = Literal[INIT_NAMES]
    OptimizerName = Literal[OPTIMIZER_NAMES]
# A named network: the schema lists idemcore's names, so "" or "N9" is refused by
# generated clients and validators as it is by the API.
ArchitectureName = Annotated[
    str,
    Field(
        pattern="^(" + "|".join(re.escape(name) for name in ARCHITECTURES) + ")$",
        description="a named network: " + ", ".join(ARCHITECTURES),
    ),
]
# Spec fields that are TrialConfig fields of the same name, shared by every trial.
SHARED_FIELDS = ("epochs", "dtype", "threshold", "eval_samples", "tf32")
# The API refuses a list with a repeated entry; the schema says so (JSON Schema's
# uniqueItems), so generated clients do not send one.
UNIQUE: dict[str, Any] = {"uniqueItems": True}
LearningRates = Annotated[list[PositiveFinite], Field(min_length=1, json_schema_extra=UNIQUE)]


def _lr_shape(value: Any) -> str:
    return "mapping" if isinstance(value, dict) else "list"


# A shared list, or one list per algorithm. The tag names the shape in an error's field
# path: ["learning_rates", "list", 0] or ["learning_rates", "mapping", "modified", 0].
LearningRateGrid = Annotated[
    Annotated[LearningRates, Tag("list")]
    | Annotated[dict[AlgorithmName, LearningRates], Tag("mapping")],
    Discriminator(_lr_shape),
]


class StrictModel(BaseModel):
    """Unknown keys are refused, so a typo in a spec never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Layer(StrictModel):
    """One layer of a custom architecture: ``Linear(in_features, out_features, bias)``."""

    in_features: PositiveInt = Field(description="input width")
    out_features: PositiveInt = Field(description="output width")
    bias: Annotated[bool, Field(description="whether the layer has a bias")] = True
    activation: Annotated[Literal["none", "tanh"], Field(description="after the layer")] = "none"


class Batch(StrictModel):
    """One batch configuration: ``samples`` per epoch, split into batches of ``batch_size``."""

    samples: PositiveInt = Field(description="training samples per epoch (the note's n)")
    batch_size: PositiveInt = Field(description="samples per weight update (the note's m)")

    @model_validator(mode="after")
    def _batch_fits(self) -> Batch:
        if self.batch_size > self.samples:
            raise ValueError(f"batch_size {self.batch_size} exceeds samples {self.samples}")
        return self


class Init(StrictModel):
    """An initialization scheme with its parameters (``std`` is used by ``normal``)."""

    scheme: InitName = Field(description="init scheme")
    std: Annotated[PositiveFinite, Field(description="standard deviation for 'normal'")] = 0.1
    gain: Annotated[PositiveFinite, Field(description="factor applied to the weights")] = 1.0


class DataFile(StrictModel):
    """A data file (``.npz``, ``.npy`` or IDX) named relative to the data directory."""

    file: str = Field(min_length=1, max_length=500, description="path under IDEM_DATA_DIR")


class Resources(StrictModel):
    """Ray resources per trial; fractional GPUs (``0.25``) let trials share a GPU."""

    cpu: Annotated[PositiveFinite, Field(description="CPUs per trial")] = 1.0
    gpu: Annotated[
        float,
        Field(ge=0, allow_inf_nan=False, description="GPUs per trial (below 1: shared GPU)"),
    ] = 0.0

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("a GPU count above 1 must be a whole number (Ray's rule)")
        return value


def no_duplicates(values: Sequence[Any]) -> None:
    seen: list[Any] = []
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"duplicate entry {_short(value)} at index {i}")
        seen.append(value)


def check_seeds(value: list[int] | int, most: int | None = None) -> list[int] | int:
    """A ``seeds`` value as given, if a list is non-empty, duplicate-free and (with
    ``most``) at most ``most`` long; a count's bounds are on its field."""
    if isinstance(value, list):
        if not value:
            raise ValueError("seeds must not be empty")
        if most is not None and len(value) > most:
            raise ValueError(f"at most {most} seeds")
        no_duplicates(value)
    return value


def seed_list(seeds: list[int] | int) -> list[int]:
    """The seeds, with a count ``n`` meaning ``0..n-1``."""
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def _short(value: Any) -> str:
    if isinstance(value, BaseModel):
        return repr(value.model_dump())
    if isinstance(value, list):
        return f"<list of {len(value)}>"
    return repr(value)


SeedList = Annotated[list[Seed], Field(min_length=1, json_schema_extra=UNIQUE)]
LayerList = Annotated[list[Layer], Field(min_length=1, description="a custom network")]


class SweepSpec(StrictModel):
    """A grid of runs: architecture × algorithm × learning rate × batch × init × seed."""

    name: str = Field(
        min_length=1, max_length=200, pattern=r"\S", description="a label for the sweep"
    )
    architectures: list[ArchitectureName | LayerList] = Field(
        min_length=1,
        json_schema_extra=UNIQUE,
        description="named networks (N1..N4, B1..B4) or custom layer lists",
    )
    algorithms: list[AlgorithmName] = Field(
        min_length=1, json_schema_extra=UNIQUE, description="training algorithms"
    )
    learning_rates: LearningRateGrid = Field(
        description="learning rates shared by every algorithm, or a mapping "
        "{algorithm: [lr, ...]} with a list for each of `algorithms` (steps of equal size "
        "need different rates: see `idem calibrate`)"
    )
    batches: list[Batch] = Field(
        min_length=1, json_schema_extra=UNIQUE, description="batch configurations"
    )
    seeds: SeedList | PositiveInt = Field(
        description="seeds, or a count n meaning seeds 0..n-1 (the seed fixes init and data)"
    )
    inits: Annotated[
        list[InitName | Init],
        Field(
            min_length=1,
            json_schema_extra=UNIQUE,
            description="initialization schemes (names or objects)",
        ),
    ] = ["default"]
    epochs: PositiveInt = Field(description="epochs per run")
    data: Annotated[
        DataName
        | DataFile
        | Annotated[list[DataName | DataFile], Field(min_length=1, json_schema_extra=UNIQUE)],
        Field(description="the training data source, or a list of them (a grid dimension)"),
    ] = "gaussian-fresh"
    optimizers: Annotated[
        list[OptimizerName],
        Field(
            min_length=1,
            json_schema_extra=UNIQUE,
            description="optimizers applying each algorithm's update: sgd (the note's), "
            "momentum (SGD, momentum 0.9), adam (PyTorch defaults but lr)",
        ),
    ] = ["sgd"]
    dtype: Annotated[Literal["float32", "float64"], Field(description="parameter dtype")] = (
        "float32"
    )
    threshold: Annotated[
        PositiveFinite,
        Field(description="idempotent error that counts as reached (epochs_to_threshold)"),
    ] = 1e-3
    eval_samples: Annotated[PositiveInt, Field(description="held-out evaluation samples")] = 1000
    record_every: Annotated[
        PositiveInt,
        Field(
            description="store each run's metrics every k epochs, plus its first and last "
            "epoch and the epoch that crossed the threshold (final values, "
            "epochs_to_threshold and every summary and claim are unaffected)"
        ),
    ] = 1
    resources: Annotated[Resources, Field(description="Ray resources per trial")] = Resources()
    pack: Annotated[
        PositiveInt | Literal[False] | None,
        Field(description="trials per packed group; false disables packing; unset = automatic"),
    ] = None
    max_concurrent: Annotated[
        PositiveInt | None, Field(description="concurrent Ray trials (unset = the cluster's)")
    ] = None
    max_failures: Annotated[
        int,
        Field(
            ge=0,
            le=100,
            description="Ray Tune restarts of a trial whose process crashed (0: it fails at once)",
        ),
    ] = 2
    priority: Annotated[
        int, Field(ge=-1_000_000, le=1_000_000, description="higher runs first")
    ] = 0
    reuse: Annotated[
        bool,
        Field(
            description="take over a stored result with the same reuse key (config, code "
            "fingerprint, torch version, device class, dtype, tf32); false runs every trial anew"
        ),
    ] = True
    tf32: Annotated[
        bool,
        Field(
            description="let float32 CUDA matmuls use TF32 (faster on Ampere+, about 1e-3 "
            "relative error); off by default, part of the reuse key"
        ),
    ] = False
    skip_invalid: Annotated[
        bool,
        Field(description="leave out combinations that cannot train (m1 on N2) instead of 422"),
    ] = False

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value

    @field_validator("pack", mode="before")
    @classmethod
    def _pack_true_is_ambiguous(cls, value: Any) -> Any:
        if value is True:
            raise ValueError("pack takes a group size or false (leave it out for automatic)")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 1:
            raise ValueError("pack must be a group size of at least 1 (or false)")
        return value

    @field_validator("architectures", "algorithms", "batches", "inits", "optimizers")
    @classmethod
    def _unique(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        keys = [_init_key(v) for v in values] if info.field_name == "inits" else values
        no_duplicates(keys)
        return values

    @field_validator("learning_rates")
    @classmethod
    def _learning_rates(
        cls, value: list[float] | dict[str, list[float]], info: ValidationInfo
    ) -> list[float] | dict[str, list[float]]:
        if isinstance(value, list):
            no_duplicates(value)
            return value
        for algorithm, rates in value.items():
            try:
                no_duplicates(rates)
            except ValueError as exc:
                raise ValueError(f"{algorithm}: {exc}") from None
        algorithms = info.data.get("algorithms")
        if algorithms is None:  # algorithms failed its own validation; reported there
            return value
        extra = [a for a in value if a not in algorithms]
        if extra:
            raise ValueError(
                f"the mapping names {extra} which are not among algorithms {algorithms}"
            )
        missing = [a for a in algorithms if a not in value]
        if missing:
            raise ValueError(f"the mapping has no list of learning rates for {missing}")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("data must not be empty")
            no_duplicates(value)
            if sum(isinstance(v, DataFile) for v in value) > 1:
                raise ValueError(
                    "at most one data file per sweep (trials record a file as data 'file')"
                )
        return value

    @field_validator("architectures")
    @classmethod
    def _layers_not_empty(cls, values: list[str | list[Layer]]) -> list[str | list[Layer]]:
        for i, value in enumerate(values):
            if isinstance(value, list) and not value:
                raise ValueError(f"architecture {i} has no layers")
        return values

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | int) -> list[int] | int:
        return check_seeds(value)

    def seed_list(self) -> list[int]:
        """The seeds, with a count ``n`` meaning ``0..n-1``."""
        return seed_list(self.seeds)

    def init_list(self) -> list[Init]:
        """The inits as :class:`Init` objects (a bare name takes the default std and gain)."""
        return [v if isinstance(v, Init) else Init(scheme=v) for v in self.inits]

    def lrs_for(self, algorithm: str) -> list[float]:
        """The learning rates ``algorithm`` runs at (the shared list, or its own)."""
        if isinstance(self.learning_rates, dict):
            return list(self.learning_rates[algorithm])
        return list(self.learning_rates)

    def data_list(self) -> list[str | DataFile]:
        """The data sources, a single value meaning a list of one."""
        return list(self.data) if isinstance(self.data, list) else [self.data]

    def data_loc(self, index: int) -> list[str | int]:
        """The field path of data source ``index`` (``data`` itself when it is one value)."""
        return ["data", index] if isinstance(self.data, list) else ["data"]

    def grid_size(self) -> int:
        """How many trials the full grid has (before any invalid pair is skipped)."""
        rates = sum(len(self.lrs_for(a)) for a in self.algorithms)
        return math.prod(
            (
                len(self.architectures),
                rates,
                len(self.batches),
                len(self.data_list()),
                len(self.optimizers),
                len(self.inits),
                self.seeds if isinstance(self.seeds, int) else len(self.seeds),
            )
        )


def _init_key(value: str | Init) -> tuple[str, float, float]:
    """'normal' and {"scheme": "normal"} are the same init (for the duplicate check)."""
    init = value if isinstance(value, Init) else Init(scheme=value)
    return (init.scheme, init.std, init.gain)


def _loc(*parts: str | int) -> list[str | int]:
    return ["body", *parts]


def resolve_data_file(name: str, data_dir: Path, loc: Sequence[str | int] = ("data",)) -> Path:
    """The data file ``name`` inside ``data_dir``; refuses absolute paths, ``..`` and
    symlinks that lead out of the directory (the API must not read arbitrary files).
    ``loc`` is the field path of the data entry (``data`` or ``data, i``)."""
    where = _loc(*loc, "file")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or "\\" in name:
        raise SpecFieldError(where, "must be a path relative to the data directory")
    if ".." in PurePosixPath(name).parts:
        raise SpecFieldError(where, "must not contain '..'")
    root = data_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise SpecFieldError(where, "leads out of the data directory (symlink)")
    if not path.is_file():
        raise SpecFieldError(where, f"no such file {name!r} in the data directory")
    return path


def _data_rows_and_dim(
    source: str | DataFile, data_path: Path | None, loc: Sequence[str | int]
) -> tuple[int, int] | None:
    """(rows, dimension) of a fixed data set; None for the gaussian sources."""
    from idemcore.errors import ConfigError

    if source == "digits":
        from idemcore.data import load_digits_array

        array = load_digits_array()
    elif data_path is not None:
        from idemcore.data import load_file_array

        try:
            array = load_file_array(data_path)
        except (ConfigError, ValueError, OSError) as exc:
            raise SpecFieldError(_loc(*loc, "file"), f"cannot be read: {exc}") from None
        if array.ndim != 2:
            raise SpecFieldError(
                _loc(*loc, "file"), f"must hold an (n, d) array, got shape {array.shape}"
            )
    else:
        return None
    return int(array.shape[0]), int(array.shape[1])


def _check_data(
    spec: SweepSpec, settings: Settings, dims: list[int]
) -> list[tuple[str, str | None]]:
    """Check every data source against the architectures and batches; return each as
    (TrialConfig.data, TrialConfig.data_path)."""
    out: list[tuple[str, str | None]] = []
    for k, source in enumerate(spec.data_list()):
        loc = spec.data_loc(k)
        data_path = (
            resolve_data_file(source.file, settings.data_dir, loc)
            if isinstance(source, DataFile)
            else None
        )
        fixed = _data_rows_and_dim(source, data_path, loc)
        if fixed is not None:
            rows, data_dim = fixed
            for i, dim in enumerate(dims):
                if dim != data_dim:
                    raise SpecFieldError(
                        _loc("architectures", i),
                        f"takes dimension {dim} but the data {_source_label(source)} has "
                        f"dimension {data_dim}",
                    )
            most = rows - max(1, rows // 10)  # at least 10% of the rows stay held out
            for j, batch in enumerate(spec.batches):
                if batch.samples > most:
                    raise SpecLimitError(
                        _loc("batches", j, "samples"),
                        f"{batch.samples} samples from {rows} rows of {_source_label(source)} "
                        "(10% stay held out)",
                        most,
                        "rows of the data set",
                    )
        name = "file" if isinstance(source, DataFile) else source
        out.append((name, str(data_path) if data_path else None))
    return out


def check_samples_x_dim(settings: Settings, loc: list[str | int], product: int, what: str) -> None:
    """SpecLimitError at ``loc`` when samples × input dimension (``product``, described
    by ``what``) exceeds ``max_samples_x_dim``: the memory guard of one trial or step."""
    if product > settings.max_samples_x_dim:
        raise SpecLimitError(loc, what, settings.max_samples_x_dim, "max_samples_x_dim")


def _source_label(source: str | DataFile) -> str:
    return repr(source.file) if isinstance(source, DataFile) else repr(source)


def architecture_value(value: str | list[Layer]) -> Any:
    if isinstance(value, str):
        return value
    from idemcore.config import LayerSpec

    return tuple(LayerSpec(**layer.model_dump()) for layer in value)


def expand_grid(
    spec: SweepSpec, settings: Settings
) -> tuple[list[TrialConfig], list[dict[str, Any]]]:
    """Check ``spec`` against idemcore and the limits in ``settings``; build its trials.

    Returns the trial configs in grid order and the skipped (architecture, algorithm)
    pairs (only with ``skip_invalid``). Raises :class:`SpecFieldError` or
    :class:`SpecLimitError` naming the field path; nothing is stored before this passes.
    """
    from idemcore.architectures import (
        M1_RESTRICTION,
        check_architecture,
        input_dim,
        m1_applicable,
    )
    from idemcore.config import TrialConfig
    from idemcore.errors import ConfigError

    if spec.epochs > settings.max_epochs:
        raise SpecLimitError(
            _loc("epochs"), f"{spec.epochs} epochs", settings.max_epochs, "max_epochs"
        )

    archs = [architecture_value(a) for a in spec.architectures]
    dims: list[int] = []
    for i, arch in enumerate(archs):
        try:
            check_architecture(arch, "ordinary")
        except ConfigError as exc:
            raise SpecFieldError(_loc("architectures", i), strip_field(str(exc))) from None
        dims.append(input_dim(arch))

    max_dim = max(dims)
    largest = dims.index(max_dim)
    for j, batch in enumerate(spec.batches):
        product = batch.samples * max_dim
        what = f"samples × dimension = {batch.samples} × {max_dim} (architecture {largest})"
        check_samples_x_dim(settings, _loc("batches", j, "samples"), product, f"{what} = {product}")
    product = spec.eval_samples * max_dim
    what = f"eval_samples × dimension = {product}"
    check_samples_x_dim(settings, _loc("eval_samples"), product, what)

    total = spec.grid_size()
    if total > settings.max_trials_per_sweep:
        raise SpecLimitError(
            _loc(),
            f"the grid has {total} trials",
            settings.max_trials_per_sweep,
            "max_trials_per_sweep",
        )

    sources = _check_data(spec, settings, dims)

    skipped: list[dict[str, Any]] = []
    bad_pairs: set[tuple[int, str]] = set()
    if "m1" in spec.algorithms:
        for i, arch in enumerate(archs):
            if not m1_applicable(arch):
                bad_pairs.add((i, "m1"))
                skipped.append(
                    {
                        "architecture": _arch_label(spec.architectures[i], arch),
                        "algorithm": "m1",
                        "reason": M1_RESTRICTION,
                    }
                )
        if bad_pairs and not spec.skip_invalid:
            names = ", ".join(f"({s['architecture']}, m1)" for s in skipped)
            raise SpecFieldError(
                _loc("algorithms", spec.algorithms.index("m1")),
                f"m1 cannot train {names}: {M1_RESTRICTION}; "
                "remove them or set skip_invalid to leave these pairs out",
                pairs=[{"architecture": s["architecture"], "algorithm": "m1"} for s in skipped],
            )

    # Each axis value as the TrialConfig fields it sets; what every trial shares.
    batches = [batch.model_dump() for batch in spec.batches]
    datas = [{"data": name, "data_path": path} for name, path in sources]
    inits = [{"init": i.scheme, "init_std": i.std, "gain": i.gain} for i in spec.init_list()]
    shared = {name: getattr(spec, name) for name in SHARED_FIELDS}
    shared["device"] = "cuda" if spec.resources.gpu > 0 else "cpu"
    configs: list[TrialConfig] = []
    for i, arch in enumerate(archs):
        for algorithm in spec.algorithms:
            if (i, algorithm) in bad_pairs:
                continue
            combos = itertools.product(
                spec.lrs_for(algorithm), batches, datas, spec.optimizers, inits, spec.seed_list()
            )
            for lr, batch, data, optimizer, init, seed in combos:
                try:
                    configs.append(
                        TrialConfig(
                            architecture=arch,
                            algorithm=algorithm,
                            learning_rate=lr,
                            optimizer=optimizer,
                            seed=seed,
                            **batch,
                            **data,
                            **init,
                            **shared,
                        )
                    )
                except ConfigError as exc:  # a rule idemcore has and we lack
                    raise SpecFieldError(_loc(), str(exc)) from None
    if not configs:
        raise SpecFieldError(
            _loc("algorithms"), "every combination was skipped as invalid; nothing to run"
        )
    return configs, skipped


def _arch_label(value: str | list[Layer], arch: Any) -> str:
    if isinstance(value, str):
        return value
    sizes = [arch[0].in_features] + [layer.out_features for layer in arch]
    return "custom:" + "-".join(str(s) for s in sizes)


def strip_field(message: str) -> str:
    """idemcore messages start with ``field: ``; the loc already names the field."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.isidentifier() else message
