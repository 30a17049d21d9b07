"""Spec reading, grouping, and the driver callback's store writes (no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from idemcore.train import train
from service.exceptions import SpecInvalid
from service.spec import SweepSpec
from service.store.engine import session_scope
from service.store.queries import get_trial
from service.store.trials import unfinished_trials
from tests.utils.factories import make_config
from tests.workers.conftest import add_sweep, epoch_numbers, spec_for
from workers.tune_runner import RunPlan, StoreCallback, error_text, load_spec, make_groups


def test_run_plan_defaults_when_the_spec_says_nothing() -> None:
    plan = RunPlan.from_spec(SweepSpec.model_validate(spec_for([make_config()])))
    assert (plan.cpu, plan.gpu, plan.pack, plan.max_concurrent) == (1.0, 0.0, None, None)
    assert plan.max_failures == 2
    assert plan.concurrency({"CPU": 8.0}, None) == 8
    assert plan.concurrency({"CPU": 8.0}, 3) == 3


def test_run_plan_reads_resources_pack_and_limits() -> None:
    stored = spec_for(
        [make_config()],
        resources={"cpu": 2, "gpu": 0.5},
        pack=False,
        max_concurrent=5,
        max_failures=0,
    )
    plan = RunPlan.from_spec(load_spec(1, stored))
    assert plan.resources() == {"cpu": 2.0, "gpu": 0.5}
    assert plan.pack is False and plan.max_concurrent == 5 and plan.max_failures == 0
    assert plan.concurrency({"CPU": 16.0, "GPU": 1.0}, None) == 5
    half_gpu = load_spec(1, spec_for([make_config()], resources={"gpu": 0.5}))
    assert RunPlan.from_spec(half_gpu).concurrency({"CPU": 16.0, "GPU": 1.0}, None) == 2


def test_a_stored_spec_that_does_not_validate_names_its_field() -> None:
    with pytest.raises(SpecInvalid, match=r"sweep 7: .* not a valid SweepSpec: name: Field"):
        load_spec(7, {"pack": False})
    with pytest.raises(SpecInvalid, match="max_failures: Input should be greater than"):
        load_spec(7, spec_for([make_config()], max_failures=0) | {"max_failures": -1})


def test_groups_are_singletons_unless_packing(engine: Engine) -> None:
    configs = [make_config(seed=s) for s in range(4)] + [make_config(architecture="N4")]
    sweep_id = add_sweep(engine, configs)
    with session_scope(engine) as session:
        todos = unfinished_trials(session, sweep_id)
    assert [len(g) for g in make_groups(todos, False)] == [1] * 5
    packed = make_groups(todos, 2)
    assert sorted(len(g) for g in packed) == [1, 2, 2]  # N4 is never packed
    assert sorted(t.id for g in packed for t in g) == [t.id for t in todos]


def _payloads(config_epochs: int, tid: int) -> list[dict]:
    from workers.trainable import run_group

    out: list[dict] = []
    import torch

    run_group(
        [(tid, make_config(epochs=config_epochs))],
        device=torch.device("cpu"),
        report_every=4,
        report=out.append,
    )
    return out


def test_callback_writes_batches_and_final_and_replay_adds_nothing(engine: Engine) -> None:
    sweep_id = add_sweep(engine, [make_config(epochs=10)])
    with session_scope(engine) as session:
        (todo,) = unfinished_trials(session, sweep_id)
    payloads = _payloads(10, todo.id)
    cb = StoreCallback(engine)
    # A crashed first attempt got two batches in; the rerun reports everything again.
    for p in payloads[:2]:
        cb.write_result(p)
    assert epoch_numbers(engine, todo.id) == list(range(1, 9))
    for p in payloads:
        cb.write_result(p)
    assert epoch_numbers(engine, todo.id) == list(range(1, 11))
    with session_scope(engine) as session:
        row = get_trial(session, todo.id)
    expected = train(make_config(epochs=10))
    assert row.status == "succeeded"
    assert row.idempotent_error == expected.idempotent_error
    assert row.epochs_run == 10
    cb.write_result(payloads[-1])  # a duplicate final is ignored, never an error


def test_retry_after_a_lost_commit_reply_finishes_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final batch commits, then the driver raises as if the connection dropped
    before the reply: the worker's retry (workers.store_retry) runs the same write again
    and must not fail on the trial it already finished."""
    sweep_id = add_sweep(engine, [make_config(epochs=10)])
    with session_scope(engine) as session:
        (todo,) = unfinished_trials(session, sweep_id)
    payloads = _payloads(10, todo.id)
    cb = StoreCallback(engine)
    for p in payloads[:-1]:
        cb.write_result(p)
    real_commit = engine.dialect.do_commit
    commits: list[str] = []

    def commit_then_lose_the_reply(dbapi_connection: Any) -> None:
        real_commit(dbapi_connection)  # the database has it
        commits.append("committed")
        if len(commits) == 1:
            exc = engine.dialect.loaded_dbapi.OperationalError("connection lost after COMMIT")
            raise exc

    monkeypatch.setattr(engine.dialect, "do_commit", commit_then_lose_the_reply)
    cb.write_result(payloads[-1])  # raised InvalidTransition before repeat_ok
    monkeypatch.undo()
    assert len(commits) == 2  # the first try committed, the retry wrote nothing new
    assert todo.id in cb.finished
    assert epoch_numbers(engine, todo.id) == list(range(1, 11))
    with session_scope(engine) as session:
        row = get_trial(session, todo.id)
    assert row.status == "succeeded" and row.epochs_run == 10


def test_callback_fail_marks_unfinished_members_failed(engine: Engine) -> None:
    sweep_id = add_sweep(engine, [make_config(seed=0), make_config(seed=1)])
    with session_scope(engine) as session:
        a, b = unfinished_trials(session, sweep_id)
    cb = StoreCallback(engine)
    cb.fail([a.id, b.id], "ValueError: boom")
    cb.fail([a.id], "again")  # already final here: ignored
    with session_scope(engine) as session:
        assert get_trial(session, a.id).status == "failed"
        assert get_trial(session, b.id).error == "ValueError: boom"


def test_error_text_unwraps_ray_task_errors() -> None:
    class Wrapper(Exception):
        cause = FileNotFoundError("data_path: no such file 'x.npy'")

    assert error_text(Wrapper("long traceback")) == (
        "FileNotFoundError: data_path: no such file 'x.npy'"
    )
    assert error_text(ValueError("a\nb\nlast line")) == "ValueError: last line"
    assert "no error" in error_text(None)


def test_tune_trial_names_carry_every_store_trial_id() -> None:
    """A trial seen in the Ray dashboard names its store trial(s): one id, or a pack's
    member ids as ranges, cut with a count past MAX_NAME_IDS characters."""
    from types import SimpleNamespace

    from workers.trainable import GROUP_KEY
    from workers.tune_runner import MAX_NAME_IDS, id_ranges, trial_name

    def tune_trial(ids: list[int]) -> Any:
        members = [{"trial_id": i} for i in ids]
        return SimpleNamespace(config={GROUP_KEY: members}, trial_id="ab12_00003")

    assert trial_name(tune_trial([12])) == "trial-12_ab12_00003"
    assert trial_name(tune_trial([15, 12, 13, 14, 20])) == "pack-12..15,20_ab12_00003"
    assert id_ranges([3, 5, 7]) == "3,5,7" and id_ranges([1, 2]) == "1..2"
    scattered = list(range(1000, 1064, 2))  # 32 members, no two consecutive
    name = trial_name(tune_trial(scattered))
    shown = name.removeprefix("pack-").rsplit("_", 2)[0].split(",")
    assert len(",".join(shown)) <= MAX_NAME_IDS + len(",+99")
    assert shown[-1].startswith("+") and len(shown) - 1 + int(shown[-1][1:]) == 32
