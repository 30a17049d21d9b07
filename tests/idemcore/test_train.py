"""The training loop: the note's N1 result, determinism, divergence, records and metrics."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from idemcore.architectures import LayerSpec
from idemcore.config import TrialConfig
from idemcore.errors import ConfigError
from idemcore.metrics import hutchinson_probes
from idemcore.nets import build_net
from idemcore.packed_engine import (
    StackedNet,
    affine_trace,
    idempotent_error,
    identity_image,
    image_dim,
    jacobian_trace,
)
from idemcore.train import Training, train
from tests.idemcore.stacked import columns, stack
from tests.utils.factories import make_config, make_small_config


def n1_modified(seed: int, init: str = "default", epochs: int = 300) -> TrialConfig:
    """The issue's protocol: N1, modified, lr 0.05, full batch (n = m = 10000)."""
    return make_config(samples=10000, batch_size=10000, epochs=epochs, seed=seed, init=init)


def assert_idempotent_projection(config: TrialConfig) -> int:
    """Run ``config``; check it converged to an idempotent linear map; return its rank."""
    result = train(config)
    assert not result.diverged
    assert result.idempotent_error is not None and result.idempotent_error < 1e-6
    assert result.eigenvalues is not None and len(result.eigenvalues) == 5
    for re, im in result.eigenvalues:
        assert min(abs(complex(re, im)), abs(complex(re - 1, im))) < 1e-2, result.eigenvalues
    assert result.eig_near_zero is not None and result.eig_near_one is not None
    assert result.eig_near_zero + result.eig_near_one == 5
    rank = result.eig_near_one
    assert result.trace == pytest.approx(rank, abs=1e-2)
    assert result.image_dim == pytest.approx(rank, abs=1e-2)
    assert result.epochs_to_threshold is not None
    return rank


# Seeds surveyed with PyTorch's default init: 0-3 and 7 collapse to the null map (rank 0),
# 5 and 6 find rank 1, 4 diverges (an eigenvalue starts above 1).
@pytest.mark.parametrize("seed,rank", [(0, 0), (5, 1), (6, 1)])
def test_n1_modified_default_init_converges_to_a_projection(seed: int, rank: int) -> None:
    assert assert_idempotent_projection(n1_modified(seed)) == rank


def test_n1_modified_orthogonal_init_finds_nontrivial_projection() -> None:
    """Orthogonal init keeps eigenvalues on the unit circle: seed 1 ends at rank 3."""
    assert assert_idempotent_projection(n1_modified(1, init="orthogonal")) == 3


def test_n1_modified_default_seed4_diverges_as_result() -> None:
    result = train(n1_modified(4))
    assert result.diverged
    assert result.epochs_run < 300
    assert result.eigenvalues is None


small = partial(
    make_config,
    architecture="N3",
    learning_rate=0.1,
    samples=512,
    batch_size=128,
    epochs=5,
    seed=3,
    eval_samples=200,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"algorithm": "ordinary", "data": "gaussian-fixed"},
        {"architecture": "B1", "dtype": "float64"},
    ],
)
def test_same_config_gives_bit_identical_records(overrides: dict[str, object]) -> None:
    def run() -> list[dict[str, object]]:
        records = [r.to_dict() for r in Training(small(**overrides)).epochs()]
        for r in records:
            r.pop("seconds")
        return records

    first, second = run(), run()
    assert first == second
    assert len(first) == 5
    other = [r.to_dict() for r in Training(small(**overrides, seed=4)).epochs()]
    assert other[0]["idempotent_error"] != first[0]["idempotent_error"]


@pytest.mark.parametrize("arch,algorithm", [("N1", "modified"), ("B1", "ordinary"), ("N1", "m1")])
def test_huge_learning_rate_ends_as_diverged(arch: str, algorithm: str) -> None:
    """Affine nets blow up (Tanh nets saturate instead, so they are not used here)."""
    config = small(architecture=arch, algorithm=algorithm, learning_rate=1e6, epochs=50)
    run = Training(config)
    records = list(run.epochs())
    result = run.result()
    assert result.diverged
    assert result.epochs_run == len(records) < 50
    last = records[-1]
    assert last.idempotent_error is None or last.loss is None or last.update_norm is None
    for value in result.to_dict().values():  # JSON-safe: no NaN or inf anywhere
        assert not (isinstance(value, float) and not math.isfinite(value))


def test_m1_on_n2_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"^algorithm: m1 .*single square linear layer"):
        small(architecture="N2", algorithm="m1")
    assert small(architecture="B1", algorithm="m1").algorithm == "m1"  # bias frozen


def test_records_threshold_and_fields() -> None:
    config = small(architecture="N1", data="gaussian-fixed", threshold=10.0)
    run = Training(config)
    records = list(run.epochs())
    assert [r.epoch for r in records] == [1, 2, 3, 4, 5]
    assert all(r.train_idempotent_error is not None for r in records)
    assert all(r.update_norm is not None and r.update_norm > 0 for r in records)
    result = run.result()
    assert result.epochs_to_threshold == 1
    assert result.epochs_run == 5 and not result.diverged
    assert result.idempotent_error == records[-1].idempotent_error
    assert result.eigenvalues is not None and result.wb_norm is None
    assert Training(small()).epochs().__next__().train_idempotent_error is None
    b1 = train(small(architecture="B1"))
    assert b1.wb_norm is not None and b1.eigenvalues is not None
    assert train(small()).eigenvalues is None  # N3 has Tanh: no eigen-analysis


def brute_jacobian_trace(net: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Independent: the full Jacobian at each point by reverse mode, then its trace."""
    traces = [torch.trace(torch.autograd.functional.jacobian(net, point)) for point in points]
    return torch.stack(traces)


@pytest.mark.parametrize("arch", ["N1", "N2", "N3", "B1"])
def test_jacobian_trace_matches_full_jacobian(arch: str) -> None:
    net = build_net(arch, seed=2, dtype=torch.float64)
    points = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = jacobian_trace(stack(net, arch), columns(points))[0]
    torch.testing.assert_close(got, brute_jacobian_trace(net, points))


def brute_probe_trace(net: torch.nn.Module, points: torch.Tensor, probes: torch.Tensor):
    """Independent: mean_k v_kᵀ J v_k with each point's full Jacobian J."""
    out = []
    for point, vs in zip(points, probes, strict=True):
        jac = torch.autograd.functional.jacobian(net, point)
        out.append(torch.einsum("kd,de,ke->k", vs, jac, vs).mean())
    return torch.stack(out)


def test_hutchinson_forward_mode_equals_probe_formula() -> None:
    """The stacked forward-mode pass gives exactly mean_k v_kᵀ J v_k for given probes."""
    arch = (LayerSpec(6, 9, True, "tanh"), LayerSpec(9, 6, True, "tanh"))
    net = build_net(arch, seed=1, dtype=torch.float64)
    points = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probes = hutchinson_probes(1, 3, 6, torch.float64)  # (p, K, d)
    stacked = StackedNet.from_nets([net], arch)
    got = jacobian_trace(stacked, columns(points), probes.unsqueeze(0))[0]
    torch.testing.assert_close(got, brute_probe_trace(net, points, probes), rtol=1e-12, atol=1e-12)


def test_hutchinson_estimate_is_unbiased_on_average() -> None:
    net = build_net("N3", seed=1, dtype=torch.float64)
    points = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    probes = (torch.randint(0, 2, (1, 4, 4000, 5), generator=g) * 2 - 1).to(torch.float64)
    estimate = jacobian_trace(stack(net, "N3"), columns(points), probes)[0]
    torch.testing.assert_close(estimate, brute_jacobian_trace(net, points), rtol=0, atol=0.05)


def test_affine_trace_equals_trace_of_weight_product() -> None:
    for arch in ("N1", "N2", "B1"):
        net = build_net(arch, seed=0, dtype=torch.float64)
        weights = [m.weight.detach() for m in net if isinstance(m, torch.nn.Linear)]
        product = weights[0]
        for w in weights[1:]:
            product = w @ product
        got = float(affine_trace(stack(net, arch))[0])
        assert got == pytest.approx(float(torch.trace(product)), rel=1e-12)


def test_epoch_metrics_match_definitions() -> None:
    """norm/trace of n(I), held-out error, train error and image_dim, by their definitions."""
    net = build_net("N3", seed=7, dtype=torch.float64)
    stacked = stack(net, "N3")
    g = torch.Generator().manual_seed(7)
    x_eval = torch.randn(100, 5, generator=g, dtype=torch.float64)
    x_train = torch.randn(30, 5, generator=g, dtype=torch.float64)
    norm, trace = (float(v[0]) for v in identity_image(stacked, 5))
    err = float(idempotent_error(stacked, columns(x_eval), chunk=40)[0])
    train_err = float(idempotent_error(stacked, columns(x_train))[0])
    idim = float(image_dim(stacked, columns(x_eval), None, activation_free=False)[0])
    with torch.no_grad():
        image = net(torch.eye(5, dtype=torch.float64))
        y, yt = net(x_eval), net(x_train)
        assert norm == pytest.approx(float(image.pow(2).sum().sqrt()), rel=1e-12)
        assert trace == pytest.approx(float(image.diagonal().sum()), rel=1e-12)
        assert err == pytest.approx(float(((net(y) - y) ** 2).mean()), rel=1e-12)
        assert train_err == pytest.approx(float(((net(yt) - yt) ** 2).mean()), rel=1e-12)
    assert idim == pytest.approx(float(brute_jacobian_trace(net, y[:64]).mean()), rel=1e-10)


def test_wide_tanh_network_uses_the_seeded_hutchinson_estimate() -> None:
    """d > 128 with tanh (like N4): image_dim is Hutchinson's estimate with the member
    seed's probes at the first 64 image points, and is the same in a pack."""
    arch = (LayerSpec(130, 8, True, "tanh"), LayerSpec(8, 130, True, "tanh"))
    config = make_small_config(
        architecture=arch, samples=20, batch_size=20, epochs=1, seed=3, eval_samples=70
    )
    run = Training(config)
    (record,) = list(run.epochs())
    net = run.net
    x_eval = run.pack.sources[0].eval_data()
    with torch.no_grad():
        y = net(x_eval[:64])
    probes = hutchinson_probes(3, 64, 130, torch.float64)
    expected = float(brute_probe_trace(net, y, probes).mean())
    assert record.image_dim == pytest.approx(expected, rel=1e-10)
