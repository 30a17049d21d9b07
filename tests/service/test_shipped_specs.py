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
