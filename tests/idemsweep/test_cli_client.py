"""The CLI client commands (idemsweep/commands/client.py) against a real `idem api`
subprocess on a free port (SQLite): submit, status, summary, compare, sweeps, cancel."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.store.engine import make_engine, session_scope
from service.store.status import TrialStatus
from service.store.trials import finish_trial, unfinished_trials
from tests.utils.cli import env_for, idem, idem_here
from tests.utils.factories import fake_epochs, fake_result
from tests.utils.processes import free_port

SPEC_YAML = """\
name: cli-test
architectures: [N1]
algorithms: [modified, ordinary]
learning_rates: [0.05]
batches:
  - {samples: 100, batch_size: 100}
seeds: 2
epochs: 5
threshold: 1.0e-3
"""


def finish_all(data_dir: Path, sweep_id: int) -> None:
    """Play a worker on the server's store: every trial of the sweep succeeds."""
    engine = make_engine(f"sqlite:///{data_dir / 'idem.db'}")
    try:
        with session_scope(engine) as s:
            todo = unfinished_trials(s, sweep_id)
        for i, t in enumerate(todo):
            result = fake_result(idempotent_error=1e-4 * (i + 1), epochs_run=5)
            with session_scope(engine) as s:
                finish_trial(s, t.id, TrialStatus.succeeded, result, None, fake_epochs(5))
    finally:
        engine.dispose()


def test_submit_status_summary_compare_cancel(
    api_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`idem submit` and `idem status` as real processes; the other commands in process
    (the same code path after start-up, without paying an interpreter start each)."""
    url, data_dir = api_server
    env = env_for(data_dir, url)

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return idem_here(*args, env=env, monkeypatch=monkeypatch, capsys=capsys)

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_YAML)

    r = idem("submit", str(spec), env=env)
    assert r.returncode == 0, r.stderr
    first_line = r.stdout.splitlines()[0]
    assert first_line.startswith("sweep ") and "queued: 4 trials (0 reused)" in first_line
    sweep_id = int(first_line.split()[1])

    r = idem("status", str(sweep_id), env=env)
    assert r.returncode == 0, r.stderr
    assert f"sweep {sweep_id} (cli-test): queued" in r.stdout
    assert "pending 4" in r.stdout

    # Its trials finish; the same spec again (as JSON) reuses all of them, so --wait
    # returns at once and prints the summary table.
    finish_all(data_dir, sweep_id)
    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps({**_yaml(SPEC_YAML), "name": "again"}))
    r = here("submit", str(as_json), "--wait", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert "4 trials (4 reused)" in r.stdout
    assert "succeeded" in r.stdout
    table = r.stdout.splitlines()
    header = next(line for line in table if "median" in line)
    assert header.split()[:4] == ["architecture", "algorithm", "learning_rate", "batch_size"]

    r = here("summary", str(sweep_id), "--by", "algorithm", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["data"]
    assert sorted(row["algorithm"] for row in rows) == ["modified", "ordinary"]
    assert all(row["n"] == 2 for row in rows)

    r = here("compare", str(sweep_id))
    assert r.returncode == 0, r.stderr
    assert "modified vs ordinary" in r.stdout and "a_wins" in r.stdout

    r = here("claims", str(sweep_id))
    assert r.returncode == 0, r.stderr
    assert "verdict" in r.stdout.splitlines()[1] and "equal_lr" in r.stdout

    r = here("sweeps")
    assert r.returncode == 0 and "cli-test" in r.stdout and "again" in r.stdout

    spec.write_text(SPEC_YAML.replace("seeds: 2", "seeds: 3"))  # 2 new trials: queued
    third = here("submit", str(spec))
    assert "queued: 6 trials (4 reused)" in third.stdout
    third_id = third.stdout.split()[1]
    r = here("cancel", third_id)
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = here("cancel", third_id)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "409" in r.stderr and "Traceback" not in r.stderr

    # --no-reuse: the same, fully stored spec runs every trial anew.
    fresh = here("submit", str(as_json), "--no-reuse")
    assert fresh.returncode == 0, fresh.stderr
    assert "queued: 4 trials (0 reused)" in fresh.stdout
    fresh_id = fresh.stdout.split()[1]
    r = here("cancel", fresh_id)
    assert r.returncode == 0


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_invalid_spec_gets_the_servers_field_path(
    api_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, data_dir = api_server
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({**_yaml(SPEC_YAML), "epochs": 0}))
    r = idem("submit", str(spec), env=env_for(data_dir, url))
    assert r.returncode == 2
    assert "422" in r.stderr and "epochs" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.yaml", "name: [unclosed\narchitectures: N1\n"),
        ("bad.json", '{"name": "x",'),
        ("list.yaml", "- 1\n- 2\n"),
        ("spec.txt", "name: x\n"),
    ],
)
def test_malformed_spec_is_one_line_exit_2(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    r = idem("submit", str(path), env=env_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert name in r.stderr


def test_unreachable_server_is_one_line_exit_2(tmp_path: Path) -> None:
    r = idem("status", "1", env=env_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert r.returncode == 2
    assert "cannot reach" in r.stderr and r.stderr.count("\n") == 1


def test_tables_align_numbers_right_and_never_wrap() -> None:
    """The CLI's tables (rich): a header, a rule, numbers right-aligned, missing values as
    "-", and a row wider than any terminal kept on one line."""
    from idemsweep.commands.client import format_table

    long_name = "x" * 300
    rows = [
        {"id": 7, "name": "paper", "n": 120, "median": 1.2345678e-5},
        {"id": 12, "name": long_name, "n": 4, "median": None},
    ]
    lines = format_table(rows, ["id", "name", "n", "median"]).splitlines()
    assert len(lines) == 4  # header, rule, one line per row
    assert lines[0].split() == ["id", "name", "n", "median"]
    assert set(lines[1]) == {"─"}
    assert lines[2].split() == ["7", "paper", "120", "1.235e-05"]
    assert lines[3].split() == ["12", long_name, "4", "-"]
    assert lines[2].index("7") == lines[3].index("12") + 1  # right-aligned ids
    assert lines[2].index("120") + 3 == lines[3].index("4") + 1  # right-aligned counts
