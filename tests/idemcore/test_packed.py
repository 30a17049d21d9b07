"""Packed training equals unpacked training, member by member; grouping and pack sizes."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch

from idemcore import train
from idemcore.config import TrialConfig
from idemcore.packed import (
    MAX_AUTO_PACK,
    PackedTraining,
    auto_pack_size,
    can_pack,
    group_configs,
    pack_key,
    split_evenly,
)
from idemcore.packed_engine import chunks
from idemcore.train import EpochRecord, Training, TrialResult
from tests.utils.factories import make_config

LRS = (0.05, 0.01, 0.002)


def base(arch: str = "N1", algorithm: str = "modified", **kw: object) -> TrialConfig:
    values: dict[str, object] = dict(
        samples=64, batch_size=16, epochs=50, dtype="float64", eval_samples=100
    )
    return make_config(architecture=arch, algorithm=algorithm, **{**values, **kw})


def members(cfg: TrialConfig, lrs: tuple[float, ...] = LRS) -> list[TrialConfig]:
    return [replace(cfg, seed=i, learning_rate=lr) for i, lr in enumerate(lrs)]


def unpacked(cfg: TrialConfig) -> tuple[list[EpochRecord], TrialResult]:
    run = Training(cfg)
    records = list(run.epochs())
    return records, run.result()


def close(a: object, b: object, rtol: float, name: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * 1e-3), (name, a, b)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), name
        for x, y in zip(a, b, strict=True):
            close(x, y, rtol, name)
    elif isinstance(a, tuple) and isinstance(b, tuple):
        for x, y in zip(a, b, strict=True):
            close(x, y, rtol, name)
    else:
        assert a == b, (name, a, b)


def assert_same(
    packed: list[EpochRecord | None], alone: list[EpochRecord], rtol: float, tag: str
) -> None:
    got = [r for r in packed if r is not None]
    assert len(got) == len(alone), tag
    assert all(r is None for r in packed[len(alone) :]), tag
    for mine, ref in zip(got, alone, strict=True):
        for f in fields(EpochRecord):
            if f.name == "seconds":
                continue
            close(getattr(mine, f.name), getattr(ref, f.name), rtol, f"{tag} {f.name}")


def assert_same_result(mine: TrialResult, ref: TrialResult, rtol: float, tag: str) -> None:
    for f in fields(TrialResult):
        if f.name == "wall_seconds":
            continue
        close(getattr(mine, f.name), getattr(ref, f.name), rtol, f"{tag} result.{f.name}")


def run_packed(cfgs: list[TrialConfig]) -> tuple[list[list[EpochRecord | None]], list[TrialResult]]:
    pt = PackedTraining(cfgs)
    per_member: list[list[EpochRecord | None]] = [[] for _ in cfgs]
    for row in pt.epochs():
        assert len(row) == len(cfgs)
        for i, rec in enumerate(row):
            per_member[i].append(rec)
    return per_member, pt.results()


def assert_members_match_alone(cfgs: list[TrialConfig], rtol: float, tag: str) -> None:
    """Train ``cfgs`` as one pack and each alone; every record and result agrees."""
    per_member, results = run_packed(cfgs)
    for i, cfg in enumerate(cfgs):
        records, result = unpacked(cfg)
        assert_same(per_member[i], records, rtol, f"{tag} member {i}")
        assert_same_result(results[i], result, rtol, f"{tag} member {i}")


CASES = [
    ("N1", "ordinary"),
    ("N1", "modified"),
    ("N1", "m1"),
    ("N2", "ordinary"),
    ("N2", "modified"),
    ("N3", "ordinary"),
    ("N3", "modified"),
    ("B1", "ordinary"),
    ("B1", "modified"),
    ("B1", "m1"),
]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-4)])
@pytest.mark.parametrize("arch,algorithm", CASES)
def test_packed_equals_unpacked(arch: str, algorithm: str, dtype: str, rtol: float) -> None:
    cfgs = members(base(arch, algorithm, dtype=dtype))
    assert_members_match_alone(cfgs, rtol, f"{arch}/{algorithm}/{dtype}")


@pytest.mark.parametrize("arch,algorithm", CASES)
def test_chunked_passes_equal_one_pass(
    arch: str, algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 16 passed 5 samples at a time (5, 5, 5, 1: the last chunk short) gives
    the unpacked run's records: the chunks' gradients and squared residuals are summed
    before the one update. (The tests' other batches fit in one chunk.)"""
    monkeypatch.setattr(train, "chunk_size", lambda *_: 5)
    cfgs = members(base(arch, algorithm, epochs=20, data="gaussian-fixed"))
    pt = PackedTraining(cfgs)
    assert pt._chunk == 5
    assert_members_match_alone(cfgs, 1e-9, f"{arch}/{algorithm} chunked")


def test_chunk_sizes() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train.chunk_size(20, 10, gpu) is None  # a GPU takes the batch at once
    assert train.chunk_size(20, 10, cpu) == train.CHUNK_ELEMENTS // 200
    assert train.chunk_size(10_000, 128, cpu) == train.MIN_CHUNK
    assert chunks(10, None) == [slice(0, 10)]
    assert chunks(10, 10) == [slice(0, 10)]
    assert chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert train.chunk_size(1, 4096, cpu) is None  # wide nets: matrix products, one pass


@pytest.mark.parametrize(
    "kw",
    [
        dict(data="gaussian-fixed"),
        dict(init="orthogonal", gain=0.9),
        dict(init="normal", init_std=0.3),
        dict(samples=50, batch_size=50),
    ],
)
def test_packed_equals_unpacked_variants(kw: dict[str, object]) -> None:
    cfgs = members(base("N3", "modified", epochs=10, **kw))
    assert_members_match_alone(cfgs, 1e-9, str(kw))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("arch,algorithm", [("N1", "modified"), ("N3", "ordinary"), ("B1", "m1")])
def test_packed_equals_unpacked_for_every_optimizer(
    arch: str, algorithm: str, optimizer: str
) -> None:
    """Per-member optimizer state: a pack of three with three learning rates gives each
    member's run alone (float64, 1e-9), chunked passes included."""
    cfgs = members(base(arch, algorithm, epochs=20, optimizer=optimizer))
    assert_members_match_alone(cfgs, 1e-9, f"{arch}/{algorithm}/{optimizer}")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_diverging_member_leaves_others_untouched(optimizer: str) -> None:
    lrs = (0.05, 1e6, 0.01) if optimizer != "adam" else (0.005, 1e60, 0.001)
    cfgs = members(base("N2", "ordinary", epochs=30, optimizer=optimizer), lrs=lrs)
    per_member, results = run_packed(cfgs)
    assert results[1].diverged
    bad = per_member[1]
    stopped = [r for r in bad if r is not None]
    assert 1 <= len(stopped) < 30
    assert all(r is None for r in bad[len(stopped) :])
    for i in (0, 2):
        records, result = unpacked(cfgs[i])
        assert not result.diverged and len(records) == 30
        assert_same(per_member[i], records, 1e-9, f"member {i}")
        assert_same_result(results[i], result, 1e-9, f"member {i}")


def test_members_sharing_a_seed_draw_once_and_match_alone() -> None:
    """One seed at several learning rates draws its fresh data once per epoch
    (train.fresh_draw_groups), and every member still equals its run alone (float64,
    1e-9), also after the group's first member diverged and stopped."""
    lrs = (1e6, 0.05, 0.01)  # the first of each seed's group diverges early
    cfgs = [
        replace(base("N2", "ordinary", epochs=30, data="gaussian-fresh"), seed=s, learning_rate=lr)
        for s in (0, 1)
        for lr in lrs
    ]
    pt = PackedTraining(cfgs)
    assert train.fresh_draw_groups(pt.sources) == [[0, 1, 2], [3, 4, 5]]
    per_member, results = run_packed(cfgs)
    assert results[0].diverged and results[3].diverged
    for i in (1, 2, 4, 5):
        records, result = unpacked(cfgs[i])
        assert not result.diverged and len(records) == 30
        assert_same(per_member[i], records, 1e-9, f"member {i}")
        assert_same_result(results[i], result, 1e-9, f"member {i}")


def test_group_configs_puts_a_seeds_rates_together() -> None:
    """Within a key, packs are cut in seed order, so a seed's learning rates share a pack."""
    cfgs = [base(seed=s, learning_rate=lr) for lr in (0.1, 0.01) for s in range(4)]  # lr-major
    packs = group_configs(cfgs, pack=4)
    assert [sorted(cfgs[i].seed for i in g) for g in packs] == [[0, 0, 1, 1], [2, 2, 3, 3]]


def test_pack_key_ignores_only_seed_and_lr() -> None:
    cfg = base()
    assert pack_key(cfg) == pack_key(replace(cfg, seed=7, learning_rate=0.3))
    for change in (
        dict(architecture="N2"),
        dict(algorithm="ordinary"),
        dict(data="gaussian-fixed"),
        dict(samples=128),
        dict(batch_size=32),
        dict(init="orthogonal"),
        dict(init_std=0.2),
        dict(gain=0.5),
        dict(dtype="float32"),
        dict(epochs=51),
        dict(eval_samples=50),
        dict(threshold=1e-4),
        dict(optimizer="adam"),
    ):
        assert pack_key(cfg) != pack_key(replace(cfg, **change)), change


def test_mismatched_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        PackedTraining([base(), base(samples=128)])


def test_can_pack_and_auto_size() -> None:
    for arch in ("N1", "N2", "N3", "B1"):
        assert can_pack(base(arch, "ordinary"))
        assert auto_pack_size(base(arch, "ordinary"), available_bytes=8 << 30) == MAX_AUTO_PACK
    for arch in ("N4", "B2", "B3", "B4"):
        cfg = base(arch, "ordinary", samples=16, batch_size=16)
        assert not can_pack(cfg)
        assert auto_pack_size(cfg, available_bytes=1 << 40) == 1
    big = base("N1", samples=100_000, batch_size=100_000)
    # ~18 MB per member in float64; 40 MB at 25% fits barely one or two.
    assert 1 <= auto_pack_size(big, available_bytes=160 << 20) < 10
    assert auto_pack_size(big, available_bytes=1) == 1


def test_split_evenly() -> None:
    assert split_evenly(list(range(40)), 32) == [list(range(20)), list(range(20, 40))]
    assert [len(g) for g in split_evenly(list(range(10)), 4)] == [4, 3, 3]
    assert split_evenly(list(range(5)), 5) == [list(range(5))]
    assert split_evenly([7], 3) == [[7]]
    for n in range(1, 30):
        for size in range(1, 12):
            packs = split_evenly(list(range(n)), size)
            assert [i for g in packs for i in g] == list(range(n))
            assert len(packs) == -(-n // size)
            assert max(len(g) for g in packs) - min(len(g) for g in packs) <= 1
            assert max(len(g) for g in packs) <= size


def test_group_configs() -> None:
    a = [base(seed=s, learning_rate=lr) for s in range(5) for lr in (0.1, 0.01)]  # 10, one key
    b = [base("N2", seed=s) for s in range(3)]  # 3, another key
    big = [base("B2", "ordinary", samples=16, batch_size=16, seed=s) for s in range(2)]
    cfgs = [*a[:4], *b, *big, *a[4:]]  # interleaved
    ia = [0, 1, 2, 3, 9, 10, 11, 12, 13, 14]
    ib = [4, 5, 6]
    assert group_configs(cfgs, pack=False) == [[i] for i in range(len(cfgs))]
    assert group_configs(cfgs, pack=1) == [[i] for i in [*ia, *ib, 7, 8]]
    # 10 members at most 4 a pack: 4 + 3 + 3 (even), not 4 + 4 + 2
    assert group_configs(cfgs, pack=4) == [ia[:4], ia[4:7], ia[7:], ib, [7], [8]]
    assert group_configs(cfgs, pack=None) == [ia, ib, [7], [8]]
    assert group_configs(cfgs, pack=True) == [ia, ib, [7], [8]]
    assert sorted(i for g in group_configs(cfgs, pack=3) for i in g) == list(range(len(cfgs)))
    with pytest.raises(ValueError):
        group_configs(cfgs, pack=0)
