"""idemsweep on a real multi-node Ray cluster (three network namespaces on one machine).

In order, on one cluster: a sweep spreads over the nodes; a ``gpu: 1`` trial is scheduled
on the only node with a GPU and fails clearly there (no real GPU); a node is lost mid-sweep
and the sweep still ends with every trial and every epoch row exactly once. The node-loss
test comes last because it takes node1 away.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.stack import Stack
from tests.utils.processes import wait_for

pytestmark = pytest.mark.slow


def spec(name: str, *, seeds: list[int], epochs: int, gpu: float = 0.0) -> dict[str, Any]:
    """A small sweep: N1 × ordinary/modified × seeds, one Ray trial per config (no packing).

    1,000 samples in batches of 100: 150 epochs take a few seconds, long enough that the
    trials overlap and every node's Tune actor gets work.
    """
    return {
        "name": name,
        "architectures": ["N1"],
        "algorithms": ["ordinary", "modified"],
        "learning_rates": [0.05],
        "batches": [{"samples": 1000, "batch_size": 100}],
        "seeds": seeds,
        "epochs": epochs,
        "eval_samples": 200,
        "pack": False,
        "resources": {"cpu": 1, "gpu": gpu},
    }


def assert_every_epoch_once(cluster: Stack, sweep_id: int, epochs: int) -> None:
    """Every trial finished (succeeded, or diverged: that is a result) with its epoch rows
    1..epochs_run each exactly once; a succeeded trial ran all ``epochs``."""
    rows = cluster.sql(
        """
        SELECT t.id, t.status, t.epochs_run, COUNT(e.epoch), COUNT(DISTINCT e.epoch),
               MIN(e.epoch), MAX(e.epoch)
        FROM trial t LEFT JOIN epoch_metric e ON e.trial_id = t.id
        WHERE t.sweep_id = :id GROUP BY t.id, t.status, t.epochs_run ORDER BY t.id
        """,
        id=sweep_id,
    )
    assert rows
    for trial_id, status, run, n, distinct, first, last in rows:
        assert status in ("succeeded", "diverged"), f"trial {trial_id} is {status}"
        assert run == epochs or status == "diverged", f"trial {trial_id} ran {run} epochs"
        assert (n, distinct, first, last) == (run, run, 1, run), f"trial {trial_id}"


def test_trials_spread_over_nodes(cluster: Stack) -> None:
    nodes = cluster.ray_nodes()
    by_ip = {n["ip"]: n for n in nodes}
    head, node1, node2 = (cluster.topo.ip(n) for n in ("head", "node1", "node2"))
    assert set(by_ip) == {head, node1, node2}
    assert all(n["alive"] for n in nodes)
    assert by_ip[node1]["resources"].get("node1") == 1
    assert by_ip[node2]["resources"].get("GPU") == 1
    assert "GPU" not in by_ip[head]["resources"]

    epochs = 150
    sweep_id = cluster.submit(spec("spread", seeds=list(range(5)), epochs=epochs))
    assert cluster.wait_sweep(sweep_id, timeout=150) == "succeeded"

    placed = cluster.sql(
        "SELECT node_ip, COUNT(*) FROM trial WHERE sweep_id = :id GROUP BY node_ip",
        id=sweep_id,
    )
    per_node = {ip: n for ip, n in placed}
    assert sum(per_node.values()) == 10
    assert set(per_node) <= set(by_ip), f"trials ran outside the cluster: {per_node}"
    assert len(per_node) >= 2, f"every trial ran on one node: {per_node}"
    assert_every_epoch_once(cluster, sweep_id, epochs)


def test_gpu_trial_goes_to_the_gpu_node_and_fails_clearly(cluster: Stack) -> None:
    gpu_spec = spec("gpu", seeds=[0], epochs=5, gpu=1)
    gpu_spec["algorithms"] = ["modified"]
    sweep_id = cluster.submit(gpu_spec)
    cluster.wait_sweep(sweep_id, timeout=90)  # finishing at all: a GPU wait would hang

    [(status, error, node_ip, attempts)] = cluster.sql(
        "SELECT status, error, node_ip, attempts FROM trial WHERE sweep_id = :id", id=sweep_id
    )
    assert status == "failed"
    assert "CUDA not available" in (error or "")
    assert node_ip == cluster.topo.ip("node2")
    assert attempts == 1, "a missing GPU is deterministic: it must not be retried"


def test_node_lost_mid_sweep(cluster: Stack) -> None:
    node1 = cluster.topo.ip("node1")
    epochs = 300  # several seconds per trial: node1 dies while its trial is running
    sweep_id = cluster.submit(spec("node-loss", seeds=list(range(100, 103)), epochs=epochs))

    def trial_running_on_node1() -> list[Any]:
        return cluster.sql(
            """
            SELECT t.id FROM trial t
            WHERE t.sweep_id = :id AND t.status = 'running' AND t.node_ip = :ip
              AND EXISTS (SELECT 1 FROM epoch_metric e WHERE e.trial_id = t.id)
            """,
            id=sweep_id,
            ip=node1,
        )

    wait_for(trial_running_on_node1, 90, "a trial running on node1", 0.2, (Exception,))
    killed = cluster.topo.kill("node1")
    assert killed, "node1 had no processes to kill"
    assert cluster.topo.pids("node1") == []
    lost = [trial_id for (trial_id,) in trial_running_on_node1()]
    assert lost, "node1's trial finished just before the kill: nothing was lost"

    assert cluster.wait_sweep(sweep_id, timeout=150) == "succeeded"
    assert_every_epoch_once(cluster, sweep_id, epochs)
    for trial_id in lost:
        [(attempts, node_ip)] = cluster.sql(
            "SELECT attempts, node_ip FROM trial WHERE id = :id", id=trial_id
        )
        assert attempts >= 2, f"lost trial {trial_id} was not retried"
        assert node_ip != node1, f"lost trial {trial_id} is recorded on the dead node"
    dead = [n for n in cluster.ray_nodes() if n["ip"] == node1]
    assert dead and not any(n["alive"] for n in dead)
