"""The notebook client and `idem export` / `idem delete` against a real `idem api`
(uvicorn in a subprocess, SQLite): the docs' example runs as written, with a test
thread playing the worker."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from idemsweep.client import Client, Conflict, InvalidRequest, NotFound, Unreachable
from service.store.claim import claim_sweep, register_worker
from service.store.engine import make_engine, session_scope
from tests.service.conftest import SMALL_SPEC
from tests.utils.cli import env_for, idem_here
from tests.utils.factories import run_sweep_to_end
from tests.utils.processes import free_port

DOCS = Path(__file__).parents[2] / "docs" / "client.md"
EPOCHS = 5


def play_worker(data_dir: Path, stop: threading.Event) -> None:
    """Claim each queued sweep of the server's store and finish it with fake epochs."""
    engine = make_engine(f"sqlite:///{data_dir / 'idem.db'}")
    try:
        with session_scope(engine) as s:
            worker = register_worker(s, "test-thread")
        while not stop.is_set():
            claimed = claim_sweep(engine, worker)
            if claimed is None:
                stop.wait(0.1)
                continue
            run_sweep_to_end(engine, claimed.id, worker, epochs=EPOCHS)
    finally:
        engine.dispose()


@pytest.fixture
def worker(api_server: tuple[str, Path]) -> Any:
    stop = threading.Event()
    thread = threading.Thread(target=play_worker, args=(api_server[1], stop), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


def docs_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    return blocks[0]


def test_the_docs_example_runs_against_a_running_api(
    api_server: tuple[str, Path], worker: Any, tmp_path: Path
) -> None:
    url, _ = api_server
    spec = tmp_path / "small.yaml"
    spec.write_text("\n".join(f"{k}: {v!r}".replace("'", '"') for k, v in SMALL_SPEC.items()))
    code = docs_example()
    assert 'Client("http://127.0.0.1:8000")' in code and '"specs/paper-cpu.yaml"' in code
    code = code.replace("http://127.0.0.1:8000", url).replace("specs/paper-cpu.yaml", str(spec))
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    assert namespace["sweep"]["status"] == "succeeded"
    trials: pd.DataFrame = namespace["trials"]
    assert len(trials) == 4 and set(trials["algorithm"]) == {"modified", "ordinary"}
    epochs: pd.DataFrame = namespace["epochs"]
    assert len(epochs) == 4 * EPOCHS
    assert list(namespace["curve"].index.get_level_values("epoch")[:EPOCHS]) == [1, 2, 3, 4, 5]
    assert namespace["summary"]["n"].tolist() == [2, 2]


def test_errors_are_typed_and_carry_the_apis_message(api_server: tuple[str, Path]) -> None:
    with Client(api_server[0]) as c:
        with pytest.raises(NotFound, match="404: sweep 999999 not found"):
            c.sweep(999999)
        with pytest.raises(InvalidRequest) as info:
            c.submit({**SMALL_SPEC, "epochs": 0})
        assert info.value.status_code == 422 and "epochs" in str(info.value)
        assert info.value.detail[0]["loc"] == ["body", "epochs"]
        fresh = {**SMALL_SPEC, "learning_rates": [0.7]}  # no stored results: stays queued
        created = c.submit(fresh, idempotency_key="typed-errors")
        assert c.submit(fresh, idempotency_key="typed-errors") == created
        with pytest.raises(Conflict, match="cancel it first"):
            c.delete(created["id"])
        c.cancel(created["id"])
        assert c.delete(created["id"])["trials"] == 4
    with Client(f"http://127.0.0.1:{free_port()}") as c, pytest.raises(Unreachable):
        c.sweeps()


def test_idem_export_and_delete(
    api_server: tuple[str, Path],
    worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    url, data_dir = api_server
    env = env_for(data_dir, url)
    with Client(url) as c:
        sweep_id = c.submit({**SMALL_SPEC, "name": "export-me", "learning_rates": [0.3]})["id"]
        c.wait(sweep_id, progress=False, interval=0.1, timeout=60)
        expected = c.epochs(sweep_id)
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"epochs.{fmt}"
        r = idem_here(
            "export", str(sweep_id), "--what", "epochs", "--format", fmt, "-o", str(out),
            env=env, monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    missing = tmp_path / "missing.csv"
    r = idem_here(
        "export", "999999", "-o", str(missing), env=env, monkeypatch=monkeypatch, capsys=capsys
    )
    assert r.returncode == 2 and "404: sweep 999999 not found" in r.stderr
    assert not missing.exists() and not Path(f"{missing}.part").exists()
    r = idem_here("delete", str(sweep_id), env=env, monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert f"sweep {sweep_id} deleted (4 trials, {4 * EPOCHS} epoch rows)" in r.stdout
    r = idem_here("delete", str(sweep_id), env=env, monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 2 and "404" in r.stderr
