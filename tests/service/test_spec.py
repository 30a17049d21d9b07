"""SweepSpec and expand_grid without a database: the grid, its order and every refusal."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.exceptions import SpecFieldError, SpecLimitError
from service.settings import Settings
from service.spec import SweepSpec, expand_grid


def spec(**overrides: Any) -> SweepSpec:
    values: dict[str, Any] = {
        "name": "t",
        "architectures": ["N1"],
        "algorithms": ["modified"],
        "learning_rates": [0.1],
        "batches": [{"samples": 100, "batch_size": 50}],
        "seeds": 2,
        "epochs": 5,
    }
    values.update(overrides)
    return SweepSpec.model_validate(values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(data_dir=tmp_path / "data", database_url="sqlite://")


def test_grid_is_the_full_product_in_order(settings: Settings) -> None:
    s = spec(
        architectures=["N1", "N2"],
        algorithms=["modified", "ordinary"],
        learning_rates=[0.01, 0.1],
        batches=[{"samples": 100, "batch_size": 100}, {"samples": 100, "batch_size": 20}],
        inits=["default", {"scheme": "normal", "std": 0.5, "gain": 2.0}],
        seeds=[3, 7],
    )
    configs, skipped = expand_grid(s, settings)
    assert skipped == []
    expected = list(
        itertools.product(
            ["N1", "N2"],
            ["modified", "ordinary"],
            [0.01, 0.1],
            [100, 20],
            [("default", 0.1, 1.0), ("normal", 0.5, 2.0)],
            [3, 7],
        )
    )
    got = [
        (
            c.architecture,
            c.algorithm,
            c.learning_rate,
            c.batch_size,
            (c.init, c.init_std, c.gain),
            c.seed,
        )
        for c in configs
    ]
    assert got == expected
    assert len({c.config_hash() for c in configs}) == len(configs) == s.grid_size()


def test_seed_count_means_zero_to_n_minus_one(settings: Settings) -> None:
    configs, _ = expand_grid(spec(seeds=3), settings)
    assert [c.seed for c in configs] == [0, 1, 2]


def test_skip_invalid_leaves_out_m1_on_multilayer_nets(settings: Settings) -> None:
    """m1 takes N1 and B1 (whose bias stays frozen), not the two-layer N2."""
    s = spec(architectures=["N1", "N2", "B1"], algorithms=["m1", "modified"], skip_invalid=True)
    configs, skipped = expand_grid(s, settings)
    assert {(c.architecture, c.algorithm) for c in configs} == {
        ("N1", "m1"),
        ("N1", "modified"),
        ("N2", "modified"),
        ("B1", "m1"),
        ("B1", "modified"),
    }
    assert [(p["architecture"], p["algorithm"]) for p in skipped] == [("N2", "m1")]
    assert skipped[0]["reason"].startswith("m1 applies only to a single square linear layer")


def test_m1_on_multilayer_net_without_skip_is_refused_naming_the_pairs(
    settings: Settings,
) -> None:
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(architectures=["N1", "N3"], algorithms=["modified", "m1"]), settings)
    detail = info.value.detail()
    assert detail["loc"] == ["body", "algorithms", 1]
    assert detail["pairs"] == [{"architecture": "N3", "algorithm": "m1"}]
    assert "N3" in str(detail["msg"])


def test_custom_layers_are_built_and_checked(settings: Settings) -> None:
    layers = [
        {"in_features": 4, "out_features": 8, "activation": "tanh"},
        {"in_features": 8, "out_features": 4},
    ]
    configs, _ = expand_grid(spec(architectures=[layers]), settings)
    assert configs[0].architecture_name == "custom:4-8-4"
    broken = [{"in_features": 4, "out_features": 8}, {"in_features": 7, "out_features": 4}]
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(architectures=["N1", broken]), settings)
    assert info.value.loc == ["body", "architectures", 1]


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"seeds": [0, 1, 0]}, ("seeds",)),
        ({"seeds": []}, ("seeds",)),
        ({"learning_rates": [0.1, 0.1]}, ("learning_rates",)),
        ({"learning_rates": [-0.1]}, ("learning_rates", "list", 0)),
        ({"learning_rates": [float("nan")]}, ("learning_rates", "list", 0)),
        ({"learning_rates": [float("inf")]}, ("learning_rates", "list", 0)),
        ({"learning_rates": []}, ("learning_rates",)),
        ({"batches": [{"samples": 10, "batch_size": 20}]}, ("batches", 0)),
        ({"batches": [{"samples": 0, "batch_size": 0}]}, ("batches", 0, "samples")),
        ({"inits": ["normal", {"scheme": "normal"}]}, ("inits",)),
        ({"epochs": 0}, ("epochs",)),
        ({"threshold": 0}, ("threshold",)),
        ({"algorithms": ["sgd"]}, ("algorithms", 0)),
        ({"algorithms": ["modified", "modified"]}, ("algorithms",)),
        ({"architectures": []}, ("architectures",)),
        ({"resources": {"cpu": 1, "gpu": 1.5}}, ("resources", "gpu")),
        ({"resources": {"cpu": 0}}, ("resources", "cpu")),
        ({"pack": True}, ("pack",)),
        ({"pack": 0}, ("pack",)),
        ({"name": "  "}, ("name",)),
        ({"colour": "red"}, ("colour",)),
    ],
)
def test_shape_errors_name_the_field(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**overrides)
    locs = [e["loc"] for e in info.value.errors()]
    assert any(tuple(x[: len(loc)]) == loc for x in locs), locs


def test_pack_false_and_sizes_are_accepted() -> None:
    assert spec(pack=False).pack is False
    assert spec(pack=8).pack == 8
    assert spec().pack is None


def test_unknown_architecture_names_its_index() -> None:
    """The schema lists the names (a pattern), so "N9" fails validation at its index."""
    with pytest.raises(ValidationError) as info:
        spec(architectures=["N1", "N9"])
    assert {e["loc"][:2] for e in info.value.errors()} == {("architectures", 1)}
    assert "N1|N2" in str(info.value)


@pytest.mark.parametrize(
    ("limit", "overrides", "loc"),
    [
        ("max_epochs", {"epochs": 11}, ["body", "epochs"]),
        ("max_trials_per_sweep", {"seeds": 11}, ["body"]),
        (
            "max_samples_x_dim",
            {"batches": [{"samples": 10, "batch_size": 10}, {"samples": 20, "batch_size": 10}]},
            ["body", "batches", 1, "samples"],
        ),
    ],
)
def test_limits_name_the_limit(
    settings: Settings, limit: str, overrides: dict[str, Any], loc: list[Any]
) -> None:
    # N1 has dimension 5: samples 20 × 5 = 100 > 50; 10 × 5 = 50 passes.
    small = settings.model_copy(
        update={"max_epochs": 10, "max_trials_per_sweep": 10, "max_samples_x_dim": 50}
    )
    if limit != "max_samples_x_dim":
        small = small.model_copy(update={"max_samples_x_dim": 10**9})
    values = {"eval_samples": 10, **overrides}
    with pytest.raises(SpecLimitError) as info:
        expand_grid(spec(**values), small)
    detail = info.value.detail()
    assert detail["loc"] == loc
    assert detail["setting"] == limit
    assert detail["limit"] == getattr(small, limit)


def test_a_huge_seed_count_is_refused_before_the_grid_is_built(settings: Settings) -> None:
    with pytest.raises(SpecLimitError):
        expand_grid(spec(seeds=2_000_000_000), settings)


# --- data files ---------------------------------------------------------------------


def test_data_file_resolves_inside_the_data_dir(settings: Settings) -> None:
    rng = np.random.default_rng(0)
    np.savez(settings.data_dir / "points.npz", x=rng.standard_normal((300, 5)))
    configs, _ = expand_grid(spec(data={"file": "points.npz"}), settings)
    assert configs[0].data == "file"
    assert Path(configs[0].data_path or "") == (settings.data_dir / "points.npz").resolve()


def test_data_file_dimension_must_match_the_network(settings: Settings) -> None:
    np.savez(settings.data_dir / "wide.npz", x=np.zeros((300, 7)))
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data={"file": "wide.npz"}), settings)
    assert info.value.loc == ["body", "architectures", 0]


def test_fixed_data_must_leave_rows_held_out(settings: Settings) -> None:
    np.savez(settings.data_dir / "few.npz", x=np.zeros((100, 5)))
    with pytest.raises(SpecLimitError) as info:
        expand_grid(spec(data={"file": "few.npz"}), settings)
    assert info.value.loc == ["body", "batches", 0, "samples"]
    assert info.value.detail()["limit"] == 90


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.npz", "sub/../../outside.npz"])
def test_data_file_outside_the_data_dir_is_refused(settings: Settings, name: str) -> None:
    np.savez(settings.data_dir.parent / "outside.npz", x=np.zeros((300, 5)))
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data={"file": name}), settings)
    assert info.value.loc == ["body", "data", "file"]


def test_symlink_out_of_the_data_dir_is_refused(settings: Settings) -> None:
    outside = settings.data_dir.parent / "secret.npz"
    np.savez(outside, x=np.zeros((300, 5)))
    os.symlink(outside, settings.data_dir / "link.npz")
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data={"file": "link.npz"}), settings)
    assert "symlink" in info.value.message


def test_missing_data_file_is_refused(settings: Settings) -> None:
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data={"file": "nope.npz"}), settings)
    assert info.value.loc == ["body", "data", "file"]


def test_digits_needs_a_64_dimensional_network(settings: Settings) -> None:
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data="digits"), settings)
    assert "64" in info.value.message
    layers = [{"in_features": 64, "out_features": 64, "bias": False}]
    configs, _ = expand_grid(
        spec(data="digits", architectures=[layers], batches=[{"samples": 1000, "batch_size": 100}]),
        settings,
    )
    assert configs[0].data == "digits"


# --- per-algorithm learning rates, data and optimizers as grid dimensions ------------


def test_spec_names_are_idemcore_names() -> None:
    from idemcore import config
    from service import spec as spec_module

    assert spec_module.ALGORITHM_NAMES == config.ALGORITHMS
    assert spec_module.INIT_NAMES == config.INITS
    assert spec_module.OPTIMIZER_NAMES == config.OPTIMIZERS
    assert set(spec_module.DATA_NAMES) == set(config.DATA_SOURCES) - {"file"}


def test_learning_rate_mapping_gives_each_algorithm_its_own_rates(settings: Settings) -> None:
    s = spec(
        algorithms=["modified", "ordinary"],
        learning_rates={"ordinary": [0.1, 0.5, 1.0], "modified": [0.01]},
    )
    configs, _ = expand_grid(s, settings)
    got = [(c.algorithm, c.learning_rate, c.seed) for c in configs]
    assert got == [
        ("modified", 0.01, 0),
        ("modified", 0.01, 1),
        *[("ordinary", lr, seed) for lr in (0.1, 0.5, 1.0) for seed in (0, 1)],
    ]
    assert len(configs) == s.grid_size() == 8


@pytest.mark.parametrize(
    ("learning_rates", "message"),
    [
        ({"modified": [0.1]}, "no list of learning rates for ['ordinary']"),
        (
            {"modified": [0.1], "ordinary": [0.1], "m1": [0.1]},
            "names ['m1'] which are not among algorithms",
        ),
        ({"modified": [0.1, 0.1], "ordinary": [0.1]}, "modified: duplicate entry 0.1"),
    ],
)
def test_learning_rate_mapping_must_match_the_algorithms(
    learning_rates: dict[str, list[float]], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        spec(algorithms=["modified", "ordinary"], learning_rates=learning_rates)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [("learning_rates",)]
    assert message in errors[0]["msg"]


def test_data_and_optimizers_are_grid_dimensions_paired_by_seed(settings: Settings) -> None:
    s = spec(
        algorithms=["modified", "ordinary"],
        learning_rates={"modified": [0.01], "ordinary": [0.1]},
        data=["gaussian-fresh", "gaussian-fixed"],
        optimizers=["sgd", "adam"],
        seeds=[4, 9],
    )
    configs, _ = expand_grid(s, settings)
    assert len(configs) == s.grid_size() == 2 * 2 * 2 * 2
    # Within one algorithm every (data, optimizer) cell has the same seeds, so runs that
    # differ in one dimension only pair up by seed.
    cells: dict[tuple[str, str, str], list[int]] = {}
    for c in configs:
        cells.setdefault((c.algorithm, c.data, c.optimizer), []).append(c.seed)
    assert set(cells) == set(
        itertools.product(
            ["modified", "ordinary"], ["gaussian-fresh", "gaussian-fixed"], ["sgd", "adam"]
        )
    )
    assert all(seeds == [4, 9] for seeds in cells.values())
    assert len({c.config_hash() for c in configs}) == len(configs)


def test_a_single_data_value_is_a_list_of_one(settings: Settings) -> None:
    one, _ = expand_grid(spec(data="gaussian-fixed"), settings)
    listed, _ = expand_grid(spec(data=["gaussian-fixed"]), settings)
    assert one == listed
    assert spec().optimizers == ["sgd"] and one[0].optimizer == "sgd"


def test_listed_data_file_errors_name_the_list_entry(settings: Settings) -> None:
    np.savez(settings.data_dir / "wide.npz", x=np.zeros((300, 7)))
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data=["gaussian-fresh", {"file": "nope.npz"}]), settings)
    assert info.value.loc == ["body", "data", 1, "file"]
    with pytest.raises(SpecFieldError) as info:
        expand_grid(spec(data=["gaussian-fresh", {"file": "wide.npz"}]), settings)
    assert info.value.loc == ["body", "architectures", 0]
    assert "'wide.npz'" in info.value.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "at least 1 item"),  # the schema says minItems 1
        (["digits", "digits"], "duplicate entry"),
        ([{"file": "a.npz"}, {"file": "b.npz"}], "at most one data file"),
    ],
)
def test_data_list_shape_errors(data: list[Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(data=data)
    assert message in str(info.value)
