"""The whole idemsweep stack on the namespace topology, as the cluster tests drive it.

PostgreSQL runs in the root namespace and listens on loopback and the bridge; the Ray head,
``idem api`` and ``idem worker --ray-address HEAD:6379`` run in the ``head`` namespace (a
Ray driver needs a raylet on its own node); node1 and node2 are Ray worker nodes. The test
process talks to the API over the bridge (as a user's laptop would) and reads the store
over loopback with plain SQL: the table and column names are a public contract.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.store.status import SWEEP_FINAL
from tests.cluster.netns import VENV_BIN, Postgres, Topology, http_ok
from tests.utils.processes import wait_for

API_PORT = 8000

# Printed by a driver in the head namespace: what Ray itself says about its nodes.
RAY_NODES_SNIPPET = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps([{"ip": n["NodeManagerAddress"], "alive": n["Alive"],
                   "resources": n["Resources"]} for n in ray.nodes()]))
"""


@dataclass
class Stack:
    """A running cluster: the topology, the store, the API and one worker."""

    topo: Topology
    pg: Postgres
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    engine: sa.Engine | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="idem-cluster-")))

    @property
    def api_url(self) -> str:
        """The API as seen from outside the head namespace (over the bridge)."""
        return f"http://{self.topo.ip('head')}:{API_PORT}"

    def service_env(self) -> dict[str, str]:
        """Environment of ``idem api`` and ``idem worker`` in the head namespace."""
        return {
            "IDEM_DATABASE_URL": self.pg.url(self.topo.ip("bridge")),
            "IDEM_DATA_DIR": str(self.workdir / "data"),  # Tune's results, not the repo
            "IDEM_API_TOKENS": json.dumps([self.token]),
            "IDEM_HEARTBEAT_INTERVAL_S": "1",
            "IDEM_REPORT_EVERY": "5",
            # The netns head runs no dashboard (memory on a 2-core box): Tune runs in the
            # worker; the Ray Job runner is tested in tests/workers/test_ray_jobs.py.
            "IDEM_RAY_JOBS": "false",
        }

    def start(self) -> None:
        """Namespaces, PostgreSQL, schema, Ray (3 nodes), API, worker; waits for each."""
        self.pg.start()
        self.engine = sa.create_engine(self.pg.url("127.0.0.1"), pool_pre_ping=True)
        subprocess.run(
            [str(VENV_BIN / "idem"), "db", "upgrade", "--url", self.pg.url("127.0.0.1")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.topo.start_ray()
        idem = str(VENV_BIN / "idem")
        self.topo.spawn(
            "head",
            [idem, "api", "--host", self.topo.ip("head"), "--port", str(API_PORT)],
            "api",
            self.service_env(),
        )
        self.topo.spawn(
            "head",
            [idem, "worker", "--ray-address", self.topo.ray_address],
            "worker",
            self.service_env(),
        )
        try:
            wait_for(lambda: http_ok(f"{self.api_url}/health"), 60, "the API", 0.5, (Exception,))
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\napi log:\n{self.topo.log('api')}") from None

    def stop(self) -> None:
        """Everything started, stopped by pid; namespaces and bridge deleted; PG removed."""
        try:
            if self.engine is not None:
                self.engine.dispose()
            self.topo.down()
        finally:
            self.pg.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- using it ----------------------------------------------------------------------

    def submit(self, spec: dict[str, Any]) -> int:
        """``idem submit`` from the root namespace, over the bridge; the new sweep's id."""
        path = self.workdir / f"{spec['name']}.json"
        path.write_text(json.dumps(spec))
        done = subprocess.run(
            [str(VENV_BIN / "idem"), "submit", str(path)],
            env=self.topo.env({"IDEM_URL": self.api_url, "IDEM_TOKEN": self.token}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # "sweep 3 queued: 10 trials (0 reused)"
        return int(done.stdout.split()[1])

    def sql(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of one SQL query against the store, as tuples."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query), params)]

    def sweep_status(self, sweep_id: int) -> str:
        """The sweep's status column."""
        return str(self.sql("SELECT status FROM sweep WHERE id = :id", id=sweep_id)[0][0])

    def wait_sweep(self, sweep_id: int, timeout: float) -> str:
        """Wait until the sweep is final; its status. Fails with the worker's log."""
        try:
            return str(
                wait_for(
                    lambda: (s := self.sweep_status(sweep_id)) in SWEEP_FINAL and s,
                    timeout,
                    f"sweep {sweep_id} to finish",
                    0.5,
                    (Exception,),
                )
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.topo.log('worker')}") from None

    def ray_nodes(self) -> list[dict[str, Any]]:
        """``ray.nodes()`` as a driver in the head namespace sees it."""
        done = self.topo.run_in(
            "head",
            [str(VENV_BIN / "python"), "-c", RAY_NODES_SNIPPET, self.topo.ray_address],
            timeout=120,
        )
        nodes: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        return nodes


@contextmanager
def running_stack() -> Iterator[Stack]:
    """A started :class:`Stack` on a free subnet, torn down on exit whatever happened."""
    topo = Topology.allocate()
    bridge = topo.ip("bridge")
    stack = Stack(topo=topo, pg=Postgres(listen=bridge, trust=f"{topo.subnet}.0/24"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()  # also tears down the namespaces made by allocate()
