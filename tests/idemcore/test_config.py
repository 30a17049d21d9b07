"""TrialConfig validation, JSON round trip, content hash; architectures and custom layers."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pytest
import torch

from idemcore.architectures import ARCHITECTURES
from idemcore.config import OPTIMIZERS, LayerSpec, TrialConfig
from idemcore.errors import ConfigError
from idemcore.nets import build_net
from tests.utils.factories import make_config

config = partial(make_config, learning_rate=0.1, batch_size=50, epochs=3)


CUSTOM = (LayerSpec(6, 12, True, "tanh"), LayerSpec(12, 6, False, "none"))


@pytest.mark.parametrize("arch", ["N3", CUSTOM])
def test_to_dict_from_dict_roundtrips_through_json(arch: object) -> None:
    original = config(
        architecture=arch,
        data="gaussian-fixed",
        init="normal",
        init_std=0.2,
        gain=0.9,
        dtype="float64",
        threshold=1e-4,
        eval_samples=64,
        optimizer="adam",
    )
    again = TrialConfig.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original
    assert again.config_hash() == original.config_hash()


def test_config_hash_is_stable_and_content_addressed() -> None:
    a = config()
    assert a.config_hash() == config().config_hash()
    assert len(a.config_hash()) == 64
    assert config(seed=1).config_hash() != a.config_hash()
    assert config(learning_rate=0.2).config_hash() != a.config_hash()
    # Key order and list-vs-tuple layers do not matter, only content.
    d = a.to_dict()
    assert TrialConfig.from_dict(dict(reversed(list(d.items())))).config_hash() == a.config_hash()
    as_list = config(
        architecture=[
            {"in_features": 6, "out_features": 12, "activation": "tanh"},
            {"in_features": 12, "out_features": 6, "bias": False},
        ]
    )
    assert as_list.config_hash() == config(architecture=CUSTOM).config_hash()


def test_optimizer_defaults_to_sgd_and_is_part_of_the_hash() -> None:
    """A config stored before ``optimizer`` existed loads as sgd; each optimizer has its
    own reuse key. (Old keys are not kept: the key covers idemcore's source, see
    tests/idemcore/test_provenance.py.)"""
    old = {k: v for k, v in config().to_dict().items() if k != "optimizer"}
    assert TrialConfig.from_dict(old).optimizer == "sgd"
    hashes = {config(optimizer=name).config_hash() for name in OPTIMIZERS}
    assert len(hashes) == len(OPTIMIZERS)


def test_architecture_name() -> None:
    assert config().architecture_name == "N1"
    assert config(architecture=CUSTOM).architecture_name == "custom:6-12-6"


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"algorithm": "adam"}, "algorithm"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"batch_size": 200}, "batch_size"),
        ({"samples": 0}, "samples"),
        ({"epochs": 1.5}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"data": "mnist"}, "data"),
        ({"data": "file"}, "data_path"),
        ({"init": "xavier"}, "init"),
        ({"dtype": "float16"}, "dtype"),
        ({"gain": 0.0}, "gain"),
        ({"architecture": "N9"}, "architecture"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_invalid_values_name_their_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**overrides)
    assert str(info.value).startswith(f"{field}:")


def test_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="unknown config fields"):
        TrialConfig.from_dict({**config().to_dict(), "lr": 0.1})


def test_custom_architecture_validation() -> None:
    with pytest.raises(ConfigError, match=r"input dimension 5 must equal output dimension 4"):
        config(architecture=(LayerSpec(5, 8), LayerSpec(8, 4)))
    with pytest.raises(ConfigError, match=r"layer 0 outputs 8 features but layer 1 takes 7"):
        config(architecture=(LayerSpec(5, 8), LayerSpec(7, 5)))
    with pytest.raises(ConfigError, match="at least one layer"):
        config(architecture=())
    with pytest.raises(ConfigError, match="unknown activation 'relu'"):
        LayerSpec(5, 5, True, "relu")
    with pytest.raises(ConfigError, match="positive"):
        LayerSpec(0, 5)
    with pytest.raises(ConfigError, match=r"^algorithm: m1 cannot train the custom"):
        config(architecture=(LayerSpec(5, 5, activation="tanh"),), algorithm="m1")
    assert config(architecture=(LayerSpec(5, 5, bias=False),), algorithm="m1")
    assert config(architecture=(LayerSpec(5, 5, bias=True),), algorithm="m1")  # bias frozen


def test_named_architectures_match_the_note() -> None:
    """Sizes, bias flags and Tanh placement of the note's two tables."""
    shapes = {
        name: [(s.in_features, s.out_features, s.bias, s.activation) for s in layers]
        for name, layers in ARCHITECTURES.items()
    }
    assert shapes["N1"] == [(5, 5, False, "none")]
    assert shapes["N2"] == [(5, 10, False, "none"), (10, 5, False, "none")]
    assert shapes["N3"] == [(5, 10, True, "tanh"), (10, 5, True, "tanh")]
    assert shapes["N4"] == [
        (784, 1024, True, "tanh"),
        (1024, 2048, True, "tanh"),
        (2048, 784, True, "tanh"),
    ]
    assert shapes["B1"] == [(5, 5, True, "none")]
    assert shapes["B2"] == [(100, 250, True, "none")] + [(250, 250, True, "none")] * 3 + [
        (250, 100, True, "none")
    ]
    assert shapes["B3"] == [(4096, 1024, True, "none"), (1024, 4096, True, "none")]
    assert shapes["B4"] == [
        (784, 1024, True, "none"),
        (1024, 2048, True, "none"),
        (2048, 784, True, "none"),
    ]
    n3 = build_net("N3", seed=0)
    assert [type(m).__name__ for m in n3] == ["Linear", "Tanh", "Linear", "Tanh"]


def test_inits_are_seeded_and_gain_scales() -> None:
    a = build_net("N2", seed=5)[0].weight
    assert torch.equal(a, build_net("N2", seed=5)[0].weight)
    assert not torch.equal(a, build_net("N2", seed=6)[0].weight)
    torch.testing.assert_close(build_net("N2", seed=5, gain=0.5)[0].weight, 0.5 * a)
    q = build_net("N1", seed=0, init="orthogonal")[0].weight.detach()
    torch.testing.assert_close(q @ q.T, torch.eye(5), atol=1e-5, rtol=0)
    w = build_net("B3", seed=0, init="normal", init_std=0.02, dtype=torch.float64)[
        0
    ].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.001
    assert build_net("N1", seed=0, dtype=torch.float64)[0].weight.dtype == torch.float64
    # default is PyTorch's Linear init: U(-1/sqrt(in), 1/sqrt(in))
    big = build_net("B4", seed=0)[1].weight.detach()
    assert float(big.abs().max()) <= 1 / 1024**0.5


def test_init_label_carries_its_parameters_once() -> None:
    """The one label of an init (stored in trial.init, shown by the report)."""
    assert config().init_label == "default"
    assert config(init="orthogonal", gain=0.9).init_label == "orthogonal gain=0.9"
    assert config(init="normal", init_std=0.2, gain=1.5).init_label == "normal(std=0.2) gain=1.5"


def test_config_records_and_architectures_import_without_torch() -> None:
    """The store and the claim path read configs and records without loading PyTorch."""
    code = (
        "import sys, idemcore.config, idemcore.records, idemcore.architectures; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
