"""The trainable's pieces without Ray: batching, finals, devices, the packed switch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from idemcore.train import PackedTraining, train
from tests.utils.factories import make_config
from workers.trainable import choose_device, make_group_run, run_group


def test_run_group_reports_every_k_epochs_then_the_final_state() -> None:
    config = make_config(epochs=10)
    reports: list[dict[str, Any]] = []
    run_group([(7, config)], device=torch.device("cpu"), report_every=3, report=reports.append)

    sizes = [len(r["batch"][0]["records"]) if r["batch"] else 0 for r in reports]
    assert sizes == [3, 3, 3, 1]
    assert "final" not in reports[0] and reports[-1]["final"][0]["trial_id"] == 7
    epochs = [rec["epoch"] for r in reports for b in r["batch"] for rec in b["records"]]
    assert epochs == list(range(1, 11))
    expected = train(config)
    assert reports[-1]["final"][0]["status"] == "succeeded"
    assert reports[-1]["final"][0]["result"]["idempotent_error"] == expected.idempotent_error


def test_diverged_member_is_reported_diverged() -> None:
    config = make_config(algorithm="ordinary", learning_rate=1e6, epochs=20)
    reports: list[dict[str, Any]] = []
    run_group([(1, config)], device=torch.device("cpu"), report_every=50, report=reports.append)
    final = reports[-1]["final"][0]
    assert final["status"] == "diverged"
    assert final["result"]["epochs_run"] < 20


def test_group_members_keep_their_own_records() -> None:
    # float64: packed members match a lone run within 1e-9 relative (docs/internals.md).
    a = make_config(seed=0, epochs=6, dtype="float64")
    b = make_config(seed=1, epochs=6, dtype="float64")
    reports: list[dict[str, Any]] = []
    run_group([(1, a), (2, b)], device=torch.device("cpu"), report_every=2, report=reports.append)
    got: dict[int, list[float]] = {1: [], 2: []}
    for r in reports:
        for item in r["batch"]:
            got[item["trial_id"]] += [rec["idempotent_error"] for rec in item["records"]]
    for tid, config in ((1, a), (2, b)):
        want: list[float] = []
        train(config, on_epoch=lambda rec, w=want: w.append(rec.idempotent_error))
        torch.testing.assert_close(got[tid], want, rtol=1e-9, atol=0)


def test_every_group_runs_the_one_training_loop() -> None:
    one = make_group_run([make_config()], torch.device("cpu"))
    two = make_group_run([make_config(seed=0), make_config(seed=1)], torch.device("cpu"))
    assert isinstance(one, PackedTraining) and len(one) == 1
    assert isinstance(two, PackedTraining) and len(two) == 2


def test_missing_data_file_raises_before_training(tmp_path: Any) -> None:
    config = make_config(data="file", data_path=str(tmp_path / "missing.npy"))
    with pytest.raises(Exception, match="no such file"):
        run_group([(1, config)], device=torch.device("cpu"), report_every=1, report=print)


def test_cpu_trial_uses_one_thread() -> None:
    before = torch.get_num_threads()
    try:
        assert choose_device(0) == torch.device("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only failure path")
def test_gpu_request_without_cuda_fails_fast_with_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA not available"):
        choose_device(1)


def test_final_state_carries_the_provenance_and_tf32_is_applied_first() -> None:
    from idemcore.fingerprint import code_fingerprint
    from idemcore.provenance import apply_numerics

    reports: list[dict[str, Any]] = []
    try:
        run_group(
            [(3, make_config(tf32=True, epochs=2))],
            device=torch.device("cpu"),
            report_every=5,
            report=reports.append,
            ray_node_id="node-x",
        )
    finally:
        apply_numerics(False)
    prov = reports[-1]["final"][0]["provenance"]
    assert prov["code_fingerprint"] == code_fingerprint() and prov["tf32"] is True
    assert prov["ray_node_id"] == "node-x" and prov["device"].startswith("cpu: ")
    assert (prov["packed"], prov["pack_id"]) == (False, None)

    pair = [(5, make_config(seed=0, epochs=2)), (6, make_config(seed=1, epochs=2))]
    reports.clear()
    run_group(pair, device=torch.device("cpu"), report_every=5, report=reports.append)
    finals = reports[-1]["final"]
    for final in finals:
        assert final["provenance"]["tf32"] is False
        assert final["provenance"]["packed"] is True
        assert final["provenance"]["pack_id"] == 5


def test_record_every_keeps_every_kth_the_first_the_crossing_and_the_last() -> None:
    """record_every=4 over 10 epochs: epochs 1, 4, 8, the threshold crossing and 10,
    with the values a run storing every epoch has; the final result is unchanged."""
    probe: list[dict[str, Any]] = []
    run_group(
        [(1, make_config(epochs=10))],
        device=torch.device("cpu"),
        report_every=10,
        report=probe.append,
    )
    errors = {
        rec["epoch"]: rec["idempotent_error"]
        for r in probe
        for b in r["batch"]
        for rec in b["records"]
    }
    # A threshold the run first crosses at an epoch record_every=4 would not keep.
    crossing = next(
        e for e in (2, 3, 5, 6, 7, 9) if errors[e] < min(errors[k] for k in range(1, e))
    )
    threshold = (errors[crossing] + min(errors[k] for k in range(1, crossing))) / 2
    config = make_config(epochs=10, threshold=threshold)

    runs: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
    for every, reports in runs.items():
        run_group(
            [(1, config)],
            device=torch.device("cpu"),
            report_every=3,
            report=reports.append,
            record_every=every,
        )
    rows = {
        k: [rec for r in v for b in r["batch"] for rec in b["records"]] for k, v in runs.items()
    }
    wanted = sorted({1, 4, 8, 10, crossing})
    assert [rec["epoch"] for rec in rows[4]] == wanted
    full = {rec["epoch"]: rec["idempotent_error"] for rec in rows[1]}
    assert [rec["idempotent_error"] for rec in rows[4]] == [full[e] for e in wanted]
    finals = [runs[k][-1]["final"][0]["result"] for k in (1, 4)]
    assert finals[0]["epochs_to_threshold"] == finals[1]["epochs_to_threshold"] == crossing
    assert finals[0]["idempotent_error"] == finals[1]["idempotent_error"]
