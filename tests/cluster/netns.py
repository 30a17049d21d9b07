"""Python side of ``scripts/netns.sh``: a multi-node Ray cluster in network namespaces.

The topology (bridge, namespaces, veth pairs, Ray nodes, kill by pid, tear-down) is made by
the shell functions in ``scripts/netns.sh``, the same ones ``bench/cluster.sh`` uses; this
module calls them and adds what the tests need: a PostgreSQL reachable over the bridge,
long-running processes inside a namespace (``idem api``, ``idem worker``), and waiting.

Nothing here runs ``ray stop``: every process lives in a namespace created here, and
``netns_down`` kills exactly the processes ``ip netns pids`` lists for those namespaces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
NETNS_SH = REPO / "scripts" / "netns.sh"
PG_SH = REPO / "scripts" / "pg.sh"
VENV_BIN = REPO / ".venv" / "bin"
NODES = ("head", "node1", "node2")
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (None when they can).

    Probes by really adding and deleting a namespace: ``ip netns`` can exist and still be
    refused (no CAP_SYS_ADMIN in a container).
    """
    if os.geteuid() != 0:
        return "needs root: the cluster tests create network namespaces (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2: no `ip` command on PATH"
    probe = f"idem-probe-{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` is refused here: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what would point our processes elsewhere: proxies (every address
    here is on the bridge or loopback), ``RAY_ADDRESS`` (set by a Ray the test session may
    have started) and ``IDEM_*`` settings of the surrounding test run."""
    return {
        k: v
        for k, v in env.items()
        if not k.lower().endswith("_proxy") and k != "RAY_ADDRESS" and not k.startswith("IDEM_")
    }


@dataclass
class Topology:
    """The namespaces of ``scripts/netns.sh`` for one subnet; every method is one call."""

    subnet: str = "10.231.8"
    prefix: str = "idemt-"
    tmp: str = "/tmp/idct8"
    logs: Path = field(default_factory=lambda: Path("/tmp/idct8-logs"))
    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for the shell helpers (and anything run inside a namespace)."""
        return {
            **clean_env(os.environ),
            **RAY_ENV,
            "NETNS_PREFIX": self.prefix,
            "NETNS_SUBNET": self.subnet,
            "NETNS_TMP": self.tmp,
            **(extra or {}),
        }

    def sh(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """Run one function of ``scripts/netns.sh`` with its arguments; return its stdout."""
        done = subprocess.run(
            ["bash", "-c", 'source "$0" && "$@"', str(NETNS_SH), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"netns.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def ip(self, node: str) -> str:
        """The address of ``node`` (``head``, ``node1``, ``node2`` or ``bridge``)."""
        index = {"bridge": 1, "head": 2, "node1": 3, "node2": 4}[node]
        return f"{self.subnet}.{index}"

    @property
    def ray_address(self) -> str:
        """The GCS address of the head, as ``ray start --address`` and drivers take it."""
        return f"{self.ip('head')}:6379"

    @classmethod
    def allocate(cls) -> Topology:
        """A topology on the first free subnet 10.231.N (N >= 8: 7 is bench/cluster.sh's),
        brought up. Free means no bridge ``idbrN`` and no local address in the subnet, so
        two runs on one machine never share (or tear down) each other's namespaces."""
        addresses = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True)
        for n in range(8, 250):
            subnet = f"10.231.{n}"
            if Path(f"/sys/class/net/idbr{n}").exists() or f" {subnet}." in addresses.stdout:
                continue
            topo = cls(subnet, f"idemt{n}-", f"/tmp/idct{n}", Path(f"/tmp/idct{n}-logs"))
            try:
                topo.up()
            except RuntimeError:  # taken meanwhile by a concurrent run: try the next one
                continue
            return topo
        raise RuntimeError("no free subnet 10.231.8-249 for the cluster tests")

    def up(self) -> None:
        """Bridge and namespaces (``netns_up``)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sh("netns_up")

    def down(self) -> None:
        """Kill every process in the namespaces by pid, delete them and the bridge."""
        for proc in self._spawned:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        self.sh("netns_down", check=False, timeout=60)
        shutil.rmtree(self.logs, ignore_errors=True)

    def start_ray(self) -> None:
        """Head (1 CPU), then node1 (1 CPU, resource ``node1``), then node2 (1 CPU, 1 GPU).

        One at a time: two raylets registering at once on a loaded 2-core machine can miss
        ``ray start``'s 30 s registration window (``netns.sh`` also retries once)."""
        self.sh("netns_ray_head", timeout=180)
        self.sh("netns_ray_node", "node1", "--resources", '{"node1": 1}', timeout=180)
        self.sh("netns_ray_node", "node2", "--num-gpus", "1", timeout=180)

    def pids(self, node: str) -> list[int]:
        """Pids of every process inside ``node``'s namespace."""
        return [int(p) for p in self.sh("netns_pids", node, check=False).split()]

    def kill(self, node: str) -> list[int]:
        """SIGKILL every process in ``node``'s namespace (a machine lost); the pids killed."""
        pids = self.pids(node)
        self.sh("netns_kill", node)
        return pids

    def spawn(
        self, node: str, argv: Sequence[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside ``node``; its output goes to ``logs/name``."""
        log: IO[bytes] = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.prefix + node, *argv],
            env=self.env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        self._spawned.append(proc)
        return proc

    def run_in(
        self,
        node: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside ``node``; raise with its output if it fails."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.prefix + node, *argv],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in {node}:\n{done.stdout}{done.stderr}")
        return done

    def log(self, name: str) -> str:
        """The tail of a spawned process's log (for failure messages)."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@dataclass
class Postgres:
    """A throwaway PostgreSQL from ``scripts/pg.sh`` that also listens on the bridge."""

    listen: str
    trust: str
    pg_dir: str = ""
    port: int = 0
    bindir: str = ""

    def start(self) -> None:
        """``pg_start`` with ``PG_LISTEN``/``PG_TRUST`` so the namespaces can connect."""
        out = subprocess.run(
            [
                "bash",
                "-c",
                'source "$0" && pg_start >&2 && echo "$PG_DIR $PG_PORT $PG_BINDIR"',
                str(PG_SH),
            ],
            env={**os.environ, "PG_LISTEN": self.listen, "PG_TRUST": self.trust},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"pg_start failed:\n{out.stderr}")
        pg_dir, port, bindir = out.stdout.split()
        self.pg_dir, self.port, self.bindir = pg_dir, int(port), bindir

    def stop(self) -> None:
        """``pg_stop`` (immediate shutdown, data directory removed)."""
        if not self.pg_dir:
            return
        subprocess.run(
            ["bash", "-c", 'source "$0" && pg_stop', str(PG_SH)],
            env={**os.environ, "PG_DIR": self.pg_dir, "PG_BINDIR": self.bindir},
            capture_output=True,
            timeout=60,
        )
        self.pg_dir = ""

    def url(self, host: str) -> str:
        """The SQLAlchemy URL of the ``postgres`` database as seen from ``host``."""
        return f"postgresql+psycopg://postgres@{host}:{self.port}/postgres"


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (used to wait for the API)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return bool(response.status == 200)
