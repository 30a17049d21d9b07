"""`idem graph`: the note's §2.2 gradient graphs, rendered by torchviz and graphviz."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idemsweep.cli import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' missing")


@needs_dot
def test_graphs_render_and_differ_between_algorithms(tmp_path: Path) -> None:
    svgs = {}
    for algorithm in ("modified", "ordinary"):
        out = tmp_path / f"{algorithm}.svg"
        assert main(["graph", "--arch", "N1", "--algorithm", algorithm, "--out", str(out)]) == 0
        text = out.read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
        assert "weight" in text  # the parameter node, named as in the note
        svgs[algorithm] = text
    assert svgs["modified"] != svgs["ordinary"]
    # Ordinary differentiates through both applications of n: a larger graph.
    assert svgs["ordinary"].count("Backward") > svgs["modified"].count("Backward")


def test_dot_source_needs_no_graphviz_binary(tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    assert main(["graph", "--algorithm", "modified", "--out", str(out)]) == 0
    assert out.read_text().startswith("digraph")


def test_graph_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--algorithm", "modified", "--out", str(tmp_path / "g.txt")]) == 2
    assert (
        main(["graph", "--arch", "N9", "--algorithm", "modified", "--out", str(tmp_path / "g.dot")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown extension" in err[0] and "N9" in err[1]


def test_missing_dot_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no 'dot' anywhere
    assert main(["graph", "--algorithm", "ordinary", "--out", str(tmp_path / "g.svg")]) == 2
    assert "graphviz's 'dot' is not installed" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()
