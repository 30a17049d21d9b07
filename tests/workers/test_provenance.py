"""Provenance through a real Ray run: collected in the trial, written by the callback."""

from __future__ import annotations

import socket
from importlib import metadata

import pytest
import torch
from sqlalchemy import Engine

from idemcore.fingerprint import code_fingerprint
from service.settings import Settings
from tests.utils.factories import make_config
from tests.workers.conftest import add_sweep, trials
from workers.worker import Worker

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_every_trial_records_code_versions_device_node_and_pack(
    ray_address: str, settings: Settings, engine: Engine
) -> None:
    import ray

    packed = [make_config(seed=s, epochs=6) for s in range(2)]
    alone = make_config(seed=0, epochs=6, tf32=True)  # another pack key: trains alone
    sweep_id = add_sweep(engine, [*packed, alone], pack=2)
    Worker(settings, engine, poll_s=0.2).run(once=True)

    rows = sorted(trials(engine, sweep_id), key=lambda t: t.id)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for row in rows:
        assert row.status == "succeeded", row.error
        assert row.code_fingerprint == code_fingerprint()
        assert row.idemsweep_version == metadata.version("idemsweep")
        assert row.torch_version == torch.__version__ and row.python_version
        assert row.device is not None and row.device.startswith("cpu: ")
        assert row.host == socket.gethostname() and row.ray_node_id in nodes
        assert row.started_at is not None and row.finished_at is not None
        assert row.started_at <= row.finished_at
    first, second, third = rows
    assert (first.packed, first.pack_id, second.packed, second.pack_id) == (
        True,
        first.id,
        True,
        first.id,
    )
    assert (third.packed, third.pack_id) == (False, None)
    assert (first.tf32, third.tf32) == (False, True)
