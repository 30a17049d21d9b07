"""Helpers for tests that run real processes: a free port, one polling loop, waiting for
an API to answer or a sweep to end, stopping what a test started.

Each lives here once; the e2e, fault, cluster, worker and CLI tests import them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from idemsweep.commands.up import free_port
from service.store.status import SWEEP_FINAL

__all__ = ["free_port"]  # a TCP port free on 127.0.0.1 right now (idem up's own helper)


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.2,
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail naming
    ``what`` after ``timeout`` seconds. Exceptions of the ``retry_on`` types count as
    "not yet" (a service still starting); any other propagates at once."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
        time.sleep(every)
    because = f" (last: {last!r})" if last else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{because}")


def output_of(proc: subprocess.Popen[Any], log: Path | None = None) -> str:
    """What a process wrote: its log file if it has one, else its captured stdout."""
    if log is not None:
        return log.read_text(errors="replace")
    if proc.stdout is not None:
        out = proc.stdout.read()
        return out.decode(errors="replace") if isinstance(out, bytes) else str(out)
    return ""


def answers_health(url: str) -> bool:
    """Whether the API at ``url`` answers GET /health with 200 right now."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(
    url: str, proc: subprocess.Popen[Any], timeout: float = 90, log: Path | None = None
) -> None:
    """Until the API at ``url`` answers /health; fails with the process's output if the
    process exits first."""

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}): {output_of(proc, log)}")
        return answers_health(url)

    wait_for(healthy, timeout, f"{url}/health", every=0.3)


def wait_sweep_final(url: str, sweep_id: int, timeout: float, every: float = 0.5) -> dict[str, Any]:
    """Poll GET /sweeps/{id} until the sweep is final; its body. Errors and non-200
    answers (a database away for a moment) count as "not yet"."""

    def final() -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{url}/sweeps/{sweep_id}", timeout=10)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        body: dict[str, Any] = r.json()
        return body if body["status"] in SWEEP_FINAL else None

    result: dict[str, Any] = wait_for(final, timeout, f"sweep {sweep_id} to finish", every)
    return result


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Terminate a process this test started (killed if it does not exit in time)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (a test's own data dir, say)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids
