"""TrialConfig: the frozen, typed description of one training run.

Built once at a boundary (CLI arguments, a Ray Tune ``config`` dict, a stored trial
row) and passed everywhere else unchanged. ``config_hash`` is its content address.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from idemcore.architectures import LayerSpec, check_architecture
from idemcore.errors import ConfigError
from idemcore.fingerprint import reuse_environment

ALGORITHMS = ("ordinary", "modified", "m1")
DATA_SOURCES = ("gaussian-fresh", "gaussian-fixed", "digits", "file")
INITS = ("default", "orthogonal", "normal")
DTYPES = ("float32", "float64")
# The note's plain SGD, SGD with momentum 0.9, Adam (PyTorch defaults except lr);
# idemcore.optim maps each name to its torch.optim class.
OPTIMIZERS = ("sgd", "momentum", "adam")
# Device classes a trial runs on (part of the reuse key: CPU and CUDA results differ).
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one run. Same config => same metrics (on CPU, bitwise).

    ``architecture`` is a named network (``"N1"`` … ``"B4"``) or a tuple of
    :class:`LayerSpec`. ``data_path`` is only used with ``data="file"``. ``optimizer``
    is how the update rule's gradient is applied (``"sgd"``, the note's, by default).
    ``device`` is the device class (``"cpu"`` or ``"cuda"``) and ``tf32`` whether float32
    CUDA matmuls may use TF32 (:func:`idemcore.provenance.apply_numerics`); both change
    results, so both are part of the reuse key.
    """

    architecture: str | tuple[LayerSpec, ...]
    algorithm: str
    learning_rate: float
    samples: int
    batch_size: int
    epochs: int
    seed: int
    data: str = "gaussian-fresh"
    data_path: str | None = None
    init: str = "default"
    init_std: float = 0.1
    gain: float = 1.0
    dtype: str = "float32"
    threshold: float = 1e-3
    eval_samples: int = 1000
    optimizer: str = "sgd"
    device: str = "cpu"
    tf32: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.architecture, list):
            object.__setattr__(self, "architecture", tuple(self.architecture))
        if isinstance(self.architecture, tuple):
            layers = tuple(
                layer if isinstance(layer, LayerSpec) else LayerSpec(**layer)
                for layer in self.architecture
            )
            object.__setattr__(self, "architecture", layers)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm: unknown {self.algorithm!r}; expected one of {list(ALGORITHMS)}"
            )
        if self.data not in DATA_SOURCES:
            raise ConfigError(f"data: unknown {self.data!r}; expected one of {list(DATA_SOURCES)}")
        if self.data == "file" and not self.data_path:
            raise ConfigError("data_path: required when data is 'file'")
        if self.init not in INITS:
            raise ConfigError(f"init: unknown {self.init!r}; expected one of {list(INITS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer: unknown {self.optimizer!r}; expected one of {list(OPTIMIZERS)}"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"device: unknown {self.device!r}; expected one of {list(DEVICES)}")
        if not isinstance(self.tf32, bool):
            raise ConfigError(f"tf32: must be true or false, got {self.tf32!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: unknown {self.dtype!r}; expected one of {list(DTYPES)}")
        for name in ("learning_rate", "gain", "init_std", "threshold"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive finite number, got {value!r}")
        for name in ("samples", "batch_size", "epochs", "eval_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: must be a non-negative integer, got {self.seed!r}")
        if self.batch_size > self.samples:
            raise ConfigError(f"batch_size: {self.batch_size} exceeds samples {self.samples}")
        check_architecture(self.architecture, self.algorithm)

    @property
    def architecture_name(self) -> str:
        """A short label: the named architecture, or the layer sizes joined by '-'."""
        if isinstance(self.architecture, str):
            return self.architecture
        sizes = [self.architecture[0].in_features] + [
            layer.out_features for layer in self.architecture
        ]
        return "custom:" + "-".join(str(s) for s in sizes)

    @property
    def init_label(self) -> str:
        """The init scheme with its parameters, the label stored in ``trial.init``:
        ``"default"``, ``"orthogonal"``, ``"normal(std=0.1)"``, with ``" gain=1.5"``
        appended when the gain is not 1 (so summaries never pool different inits)."""
        label = f"normal(std={self.init_std:g})" if self.init == "normal" else self.init
        return label if self.gain == 1.0 else f"{label} gain={self.gain:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``TrialConfig.from_dict(c.to_dict()) == c``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "architecture" and isinstance(value, tuple):
                value = [asdict(layer) for layer in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Build from a dict (unknown keys are refused, so typos do not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {unknown}")
        return cls(**data)

    def config_hash(self) -> str:
        """The reuse key: content address of the config (device class, dtype and tf32
        included) plus :func:`idemcore.fingerprint.reuse_environment` (a fingerprint of
        idemcore's source and the torch version). A stored result is reused only under
        an equal key, so a change to the training code never serves an old result."""
        payload = {**self.to_dict(), **reuse_environment()}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
