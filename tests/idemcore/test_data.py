"""Data sources: shapes, seeding, held-out splits, and file formats (.npz, .npy, IDX)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from idemcore.data import GaussianFresh, generator, load_file_array, make_data
from idemcore.errors import ConfigError
from idemcore.train import Training
from tests.utils.factories import make_config

F32 = torch.float32


def source(name: str, seed: int = 0, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(dim=5, samples=100, seed=seed, dtype=F32, eval_samples=40)
    args.update(kw)
    return make_data(name, **args)  # type: ignore[arg-type]


def test_generator_streams_are_independent_and_reproducible() -> None:
    a = torch.randn(3, generator=generator(1, 1))
    assert torch.equal(a, torch.randn(3, generator=generator(1, 1)))
    assert not torch.equal(a, torch.randn(3, generator=generator(1, 2)))
    assert not torch.equal(a, torch.randn(3, generator=generator(2, 1)))


def test_gaussian_fresh_redraws_each_epoch_and_is_seeded() -> None:
    src = source("gaussian-fresh")
    assert isinstance(src, GaussianFresh) and src.train_data() is None
    e1, e2 = src.epoch_data(1), src.epoch_data(2)
    assert e1.shape == (100, 5) and e1.dtype == F32
    assert not torch.equal(e1, e2)
    again = source("gaussian-fresh")
    assert torch.equal(again.epoch_data(1), e1)
    assert not torch.equal(source("gaussian-fresh", seed=1).epoch_data(1), e1)
    held = src.eval_data()
    assert held.shape == (40, 5) and torch.equal(held, again.eval_data())
    assert abs(float(torch.cat([e1, e2]).std()) - 1) < 0.15


def test_gaussian_fixed_is_one_set_reshuffled() -> None:
    src = source("gaussian-fixed")
    train = src.train_data()
    assert train is not None and train.shape == (100, 5)
    e1, e2 = src.epoch_data(1), src.epoch_data(2)
    assert not torch.equal(e1, e2)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(e1) == key(e2) == key(train)
    assert torch.equal(source("gaussian-fixed").epoch_data(1), e1)
    assert src.eval_data().shape == (40, 5)


def test_digits_is_64_dimensional_standardized_with_held_out_split() -> None:
    src = source("digits", dim=64, samples=1000, eval_samples=300, dtype=torch.float64)
    train, held = src.train_data(), src.eval_data()
    assert train is not None and train.shape == (1000, 64) and held.shape == (300, 64)
    rows = {tuple(r) for r in train.tolist()}
    assert not any(tuple(r) in rows for r in held.tolist())  # digits has no duplicate rows
    both = torch.cat([train, held])
    assert abs(float(both.mean())) < 0.05
    assert torch.equal(
        source("digits", dim=64, samples=1000, eval_samples=300, dtype=torch.float64).train_data(),
        train,
    )
    assert not torch.equal(
        source(
            "digits", seed=1, dim=64, samples=1000, eval_samples=300, dtype=torch.float64
        ).train_data(),
        train,
    )


def test_digits_refuses_wrong_dimension_and_too_many_samples() -> None:
    with pytest.raises(ConfigError, match=r"^data: digits has dimension 64"):
        source("digits", dim=5)
    with pytest.raises(ConfigError, match=r"^samples:"):
        source("digits", dim=64, samples=1797)


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, type code 0x0D (float32), ndim, big-endian sizes, data."""
    header = struct.pack(">HBB", 0, 0x0D, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    path.write_bytes(header + array.astype(">f4").tobytes())


def test_file_sources_roundtrip(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=array)
    np.save(tmp_path / "a.npy", array)
    write_idx(tmp_path / "a.idx", array)
    with gzip.open(tmp_path / "a.idx.gz", "wb") as fh:
        fh.write((tmp_path / "a.idx").read_bytes())
    images = (np.arange(40 * 2 * 3) % 256).astype(np.uint8).reshape(40, 2, 3)
    (tmp_path / "img-ubyte").write_bytes(
        struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 40, 2, 3) + images.tobytes()
    )
    for name in ("a.npz", "a.npy", "a.idx", "a.idx.gz"):
        np.testing.assert_array_equal(load_file_array(tmp_path / name), array.astype(np.float64))
    np.testing.assert_array_equal(load_file_array(tmp_path / "img-ubyte"), images.reshape(40, 6))
    src = source("file", dim=6, samples=40, eval_samples=10, data_path=str(tmp_path / "a.idx"))
    train, held = src.train_data(), src.eval_data()
    assert train is not None and train.shape == (40, 6) and held.shape == (10, 6)
    together = sorted(map(tuple, torch.cat([train, held]).tolist()))
    assert together == sorted(map(tuple, torch.from_numpy(array).tolist()))


def test_file_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data_path: no such file"):
        load_file_array(tmp_path / "missing.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match=r"^data_path: .*name the data 'x'"):
        load_file_array(tmp_path / "two.npz")
    (tmp_path / "junk.idx").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ConfigError, match=r"^data_path: .*not an IDX file"):
        load_file_array(tmp_path / "junk.idx")


def test_training_on_a_file_source(tmp_path: Path) -> None:
    array = np.random.default_rng(1).standard_normal((60, 5))
    np.savez(tmp_path / "d.npz", data=array)
    config = make_config(
        samples=40, batch_size=20, epochs=3, data="file", data_path=str(tmp_path / "d.npz")
    )
    records = list(Training(config).epochs())
    assert len(records) == 3 and all(r.train_idempotent_error is not None for r in records)
