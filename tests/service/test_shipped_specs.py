"""The specs shipped in specs/ are valid sweeps: they parse, validate and expand."""

from __future__ import annotations

from pathlib import Path

import pytest

from idemsweep.commands.client import read_specs
from idemsweep.errors import CliError
from service.settings import Settings
from service.spec import SweepSpec, expand_grid

SPECS = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_expands(path: Path, tmp_path: Path) -> None:
    docs = read_specs(str(path))
    assert docs
    for doc in docs:
        spec = SweepSpec.model_validate(doc)
        trials, _skipped = expand_grid(spec, Settings(data_dir=tmp_path))
        assert trials, f"{path.name}: {doc.get('name')} expands to no trial"


def test_open_questions_holds_several_sweeps() -> None:
    docs = read_specs(str(Path(__file__).parents[2] / "specs" / "open-questions.yaml"))
    assert len(docs) >= 2
    assert len({d["name"] for d in docs}) == len(docs)


def test_multi_document_yaml_is_several_specs(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("name: a\nepochs: 1\n---\nname: b\nepochs: 2\n")
    assert [d["name"] for d in read_specs(str(path))] == ["a", "b"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    with pytest.raises(CliError, match="holds no spec"):
        read_specs(str(empty))


@pytest.mark.slow
def test_paper_full_has_matched_step_pairs_for_every_architecture() -> None:
    """Calibrating on this CPU (one step, seed 0, batch 20): at the rates paper-full gives
    each algorithm, every architecture N1-N4, B1-B4 has at least two learning-rate pairs
    whose first steps match within the report's factor (modified, and m1 where it trains,
    against ordinary)."""
    from idemcore import calibrate
    from idemcore.architectures import m1_applicable

    docs = read_specs(str(Path(__file__).parents[2] / "specs" / "paper-full.yaml"))
    seen: dict[str, int] = {}
    for doc in docs:
        spec = SweepSpec.model_validate(doc)
        for arch in spec.architectures:
            assert isinstance(arch, str)
            algorithms = [a for a in spec.algorithms if a != "m1" or m1_applicable(arch)]
            rates = {a: spec.lrs_for(a) for a in algorithms}
            sizes = calibrate.measure(arch, algorithms, rates, seeds=[0], batch_size=20)
            steps = calibrate.steps_by_algorithm(sizes)
            for a in algorithms:
                if a == "ordinary":
                    continue
                pairs = calibrate.matched_pairs(steps[a], steps["ordinary"])
                assert len(pairs) >= 2, (spec.name, arch, a, pairs)
                seen[arch] = min(seen.get(arch, len(pairs)), len(pairs))
    assert sorted(seen) == ["B1", "B2", "B3", "B4", "N1", "N2", "N3", "N4"]
