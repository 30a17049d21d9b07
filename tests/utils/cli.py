"""Running the `idem` CLI from tests: as a real process, or in this process (the same
code path after start-up, without paying an interpreter start each time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IDEM = [sys.executable, "-m", "idemsweep"]


def env_for(data_dir: Path, url: str | None = None) -> dict[str, str]:
    """This environment without inherited IDEM_* settings, with ``IDEM_DATA_DIR`` (and
    ``IDEM_URL`` when given) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    env["IDEM_DATA_DIR"] = str(data_dir)
    if url:
        env["IDEM_URL"] = url
    return env


def idem(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`idem ARGS` as a real process with ``env``; output captured as text."""
    return subprocess.run(
        [*IDEM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``idemsweep.cli.main(ARGS)`` here: (exit code, stdout, stderr). argparse's own
    errors (SystemExit) count as their exit code."""
    from idemsweep.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def idem_here(
    *args: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> subprocess.CompletedProcess[str]:
    """`idem ARGS` in this process (real HTTP), with ``env``'s IDEM_* variables as the
    only IDEM_* environment and fresh settings; shaped like :func:`idem`'s answer."""
    from service.settings import get_settings

    for key in [k for k in os.environ if k.startswith("IDEM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("IDEM_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        code, out, err = run_main(capsys, *args)
    finally:
        get_settings.cache_clear()
    return subprocess.CompletedProcess(list(args), code, out, err)
