"""`idem calibrate` on this machine: the table, the suggestion, JSON, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.utils.cli import run_main


def test_calibrate_prints_steps_pairs_and_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys, "calibrate", "--arch", "N1", "--lr", "0.1", "0.3", "--seeds", "2",
        "--batch-size", "20", "--suggest",
    )  # fmt: skip
    assert code == 0, err
    assert "N1 (d = 5, 25 parameters), batch 20, sgd, seeds [0, 1]" in out
    assert "modified / ordinary" in out
    assert "matched pairs (within ×2)" in out
    line = next(x for x in out.splitlines() if "learning_rates: {" in x)
    assert "ordinary: [0.1, 0.3]" in line and "modified: [" in line
    assert "steps match within ×1.25" in out


def test_calibrate_json_is_the_api_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from service.calibration import CalibrationPublic

    code, out, err = run_main(
        capsys, "calibrate", "--arch", "B1", "--algorithms", "modified", "ordinary",
        "--lr", "0.05", "--seeds", "1", "--batch-size", "10", "--optimizer", "momentum",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    result = CalibrationPublic.model_validate(json.loads(out))
    assert result.optimizer == "momentum" and result.suggestion is None
    assert [s.algorithm for s in result.steps] == ["modified", "ordinary"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "Z9", "--lr", "0.1"], "architecture: "),
        (["--arch", "N2", "--algorithms", "m1", "--lr", "0.1"], "algorithms.0: "),
        (["--arch", "N1", "--lr", "-1"], "learning_rates.0: "),
    ],
)
def test_calibrate_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _out, err = run_main(capsys, "calibrate", *args)
    assert code == 2
    assert err.startswith("idem calibrate: error: " + message), err
    assert len(err.strip().splitlines()) == 1
