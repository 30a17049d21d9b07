"""`idem train`: the JSON result line and one-line errors with exit code 2 (in-process)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from idemcore.records import TrialResult
from tests.utils.cli import run_main

FIELDS = {f.name for f in fields(TrialResult)}  # the result object, declared once


def train(capsys: pytest.CaptureFixture[str], args: str) -> tuple[int, str, str]:
    """`idem train ARGS` in this process (ARGS split on spaces)."""
    return run_main(capsys, "train", *args.split())


def test_json_last_line_has_the_issue_fields(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--arch N1 --algorithm modified --lr 0.05 --samples 500 --batch-size 500 --epochs 4"
    code, out, err = train(capsys, args + " --seed 0 --json")
    assert code == 0
    payload = json.loads(out.strip().splitlines()[-1])
    assert set(payload) == FIELDS
    assert payload["epochs_run"] == 4 and payload["diverged"] is False
    assert len(payload["eigenvalues"]) == 5  # activation-free: eigenvalues included
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_json_for_tanh_net_has_no_eigenvalues(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--arch N3 --algorithm ordinary --lr 0.1 --samples 200 --batch-size 100 --epochs 2"
    code, out, _ = train(capsys, args + " --json --data gaussian-fixed --dtype float64")
    payload = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and payload["eigenvalues"] is None
    assert payload["train_idempotent_error"] is not None


def test_plain_output_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--arch B1 --algorithm modified --lr 0.05 --samples 100 --batch-size 100 --epochs 2"
    code, out, _ = train(capsys, args)
    assert code == 0
    assert "idempotent_error:" in out and "eigenvalues:" in out and "wb_norm:" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        ("--arch N9 --algorithm modified --lr 0.1", "architecture: unknown 'N9'"),
        ("--arch N2 --algorithm m1 --lr 0.1", "m1 cannot train N2"),
        ("--arch N1 --algorithm modified --lr -1", "learning_rate:"),
        (
            "--arch N1 --algorithm modified --lr 0.1 --batch-size 20000",
            "batch_size: 20000 exceeds samples 10000",
        ),
        ("--arch N1 --algorithm modified --lr abc", "invalid float value"),
        ("--arch N1 --algorithm adam --lr 0.1", "invalid choice: 'adam'"),
        ("--arch N1 --algorithm modified", "the following arguments are required"),
        (
            "--arch N1 --algorithm modified --lr 0.1 --data file",
            "data_path: required",
        ),
        (
            "--arch N1 --algorithm modified --lr 0.1 --data digits --samples 1000 --batch-size 100",
            "data: digits has dimension 64",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: str, needle: str
) -> None:
    code, out, err = train(capsys, args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]


def test_optimizer_flag_trains_with_that_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    from idemcore.train import train as train_config
    from tests.utils.factories import make_small_config

    config = make_small_config(learning_rate=0.01, epochs=3, optimizer="adam")
    args = "--arch N1 --algorithm modified --lr 0.01 --samples 64 --batch-size 16 --epochs 3"
    code, out, _ = train(capsys, args + " --dtype float64 --optimizer adam --json")
    assert code == 0
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["idempotent_error"] == train_config(config).idempotent_error
