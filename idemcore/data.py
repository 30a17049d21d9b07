"""Data sources, each seeded from the trial seed.

A source gives the training set of each epoch (``epoch_data``), a held-out evaluation
set drawn once per seed (``eval_data``), and, for fixed data, the training set itself
(``train_data``) so that train vs held-out idempotent error shows memorizing.
"""

from __future__ import annotations

import gzip
import struct
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from idemcore.errors import ConfigError

# Sub-streams of a trial seed: independent generators for each purpose.
STREAM_TRAIN = 1
STREAM_EVAL = 2
STREAM_ORDER = 3
STREAM_PROBE = 4


def generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose of one seed (independent of the global RNG)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


class DataSource(ABC):
    """Training data for one trial."""

    fresh: bool = False

    def __init__(
        self, dim: int, samples: int, seed: int, dtype: torch.dtype, eval_samples: int
    ) -> None:
        self.dim = dim
        self.samples = samples
        self.seed = seed
        self.dtype = dtype
        self.eval_samples = eval_samples

    @abstractmethod
    def epoch_data(self, epoch: int) -> torch.Tensor:
        """The (samples, dim) training set of epoch ``epoch`` (1-based), in batch order."""

    def eval_data(self) -> torch.Tensor:
        """Held-out (eval_samples, dim) gaussian sample, drawn once per seed."""
        g = generator(self.seed, STREAM_EVAL)
        return torch.randn(self.eval_samples, self.dim, generator=g, dtype=self.dtype)

    def train_data(self) -> torch.Tensor | None:
        """The fixed training set (None when data is redrawn every epoch)."""
        return None


class GaussianFresh(DataSource):
    """The note's protocol: n samples ~ N(0, 1), redrawn at every epoch."""

    fresh = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._gen = generator(self.seed, STREAM_TRAIN)

    def epoch_data(self, epoch: int) -> torch.Tensor:
        return torch.randn(self.samples, self.dim, generator=self._gen, dtype=self.dtype)


class FixedData(DataSource):
    """A training set fixed across epochs, reshuffled each epoch (seeded)."""

    def __init__(
        self, train: torch.Tensor, held_out: torch.Tensor, seed: int, dtype: torch.dtype
    ) -> None:
        super().__init__(train.shape[1], train.shape[0], seed, dtype, held_out.shape[0])
        self._train = train.to(dtype)
        self._held_out = held_out.to(dtype)
        self._order = generator(seed, STREAM_ORDER)

    def epoch_data(self, epoch: int) -> torch.Tensor:
        perm = torch.randperm(self.samples, generator=self._order)
        return self._train[perm]

    def eval_data(self) -> torch.Tensor:
        return self._held_out

    def train_data(self) -> torch.Tensor:
        return self._train


def _split(
    array: np.ndarray, samples: int, eval_samples: int, seed: int, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle by seed; keep ``samples`` rows for training and hold out
    min(eval_samples, rest) of the others (at least 10% of the rows)."""
    if array.ndim != 2:
        raise ConfigError(f"data: {source} must hold an (n, d) array, got shape {array.shape}")
    n = array.shape[0]
    held = min(eval_samples, n - samples)
    if held < max(1, n // 10):
        raise ConfigError(
            f"samples: {source} has {n} rows; samples ({samples}) must leave at least "
            f"{max(1, n // 10)} rows (10%) held out, so at most {n - max(1, n // 10)}"
        )
    perm = torch.randperm(n, generator=generator(seed, STREAM_ORDER))
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[perm]
    return tensor[:samples], tensor[samples : samples + held]


def load_digits_array() -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1797 x 64), standardized per feature."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)
    std = x.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels stay 0 after centring
    return (x - x.mean(axis=0)) / std


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    codes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if zero != 0 or dtype_code not in codes:
        raise ConfigError(f"data_path: {path.name} is not an IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    array = np.frombuffer(raw, dtype=codes[dtype_code], offset=4 + 4 * ndim)
    array = array.reshape(shape).astype(np.float64)
    return array.reshape(shape[0], -1)


def load_file_array(path: str | Path) -> np.ndarray:
    """An (n, d) float array from a ``.npz`` (key ``x``, ``data`` or the only array),
    ``.npy`` or IDX (``.idx``/``-ubyte``, optionally gzipped) file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data_path: no such file {str(p)!r}")
    if p.suffix == ".npz":
        with np.load(p) as npz:
            keys = list(npz.keys())
            key = next((k for k in ("x", "data") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ConfigError(
                    f"data_path: {p.name} holds arrays {keys}; name the data 'x' or 'data'"
                )
            array = np.asarray(npz[key], dtype=np.float64)
    elif p.suffix == ".npy":
        array = np.load(p).astype(np.float64)
    else:
        array = _read_idx(p)
    if array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    return array


def make_data(
    name: str,
    *,
    dim: int,
    samples: int,
    seed: int,
    dtype: torch.dtype,
    eval_samples: int,
    data_path: str | None = None,
) -> DataSource:
    """The data source a config names, checked against the network's dimension."""
    if name == "gaussian-fresh":
        return GaussianFresh(dim, samples, seed, dtype, eval_samples)
    if name == "gaussian-fixed":
        g = generator(seed, STREAM_TRAIN)
        train = torch.randn(samples, dim, generator=g, dtype=dtype)
        held = torch.randn(eval_samples, dim, generator=generator(seed, STREAM_EVAL), dtype=dtype)
        return FixedData(train, held, seed, dtype)
    if name == "digits":
        array = load_digits_array()
    elif name == "file":
        if data_path is None:
            raise ConfigError("data_path: required when data is 'file'")
        array = load_file_array(data_path)
    else:
        raise ConfigError(f"data: unknown source {name!r}")
    if array.shape[1] != dim:
        raise ConfigError(
            f"data: {name} has dimension {array.shape[1]} but the network takes {dim}"
        )
    train, held = _split(array, samples, eval_samples, seed, name)
    return FixedData(train, held, seed, dtype)
