"""docker-compose.yml, checked without a Docker engine: real commands, real settings,
dependencies that exist and are ordered, a GPU reservation on the Ray workers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def check_idem(argv: list[str]) -> None:
    """The arguments parse with the real `idem` parser (unknown options exit)."""
    from idemsweep.cli import build_parser

    parser = build_parser()
    parser.exit = _raise  # type: ignore[method-assign,assignment]
    parser.parse_args(argv[1:])


def _raise(status: int = 0, message: str | None = None) -> None:
    raise AssertionError(f"idem rejects the arguments: {message}")


def check_ray(argv: list[str]) -> None:
    """A real `ray` subcommand, every option one that subcommand has."""
    from ray.scripts.scripts import cli

    assert argv[1] in cli.commands, f"ray has no subcommand {argv[1]!r}"
    command = cli.commands[argv[1]]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for arg in argv[2:]:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in known, f"ray {argv[1]} has no option {arg}"


def test_every_command_is_a_real_idem_or_ray_command(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        commands = [service.get("command")]
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD" and test[1] in ("idem", "ray"):
            commands.append(test[1:])
        for command in filter(None, commands):
            argv = _argv(command)
            assert argv[0] in ("idem", "ray"), f"{name}: {argv[0]} is neither idem nor ray"
            (check_idem if argv[0] == "idem" else check_ray)(argv)
            checked += 1
    assert checked >= 6


def test_idem_parser_rejects_a_made_up_command() -> None:
    with pytest.raises(AssertionError):
        check_idem(["idem", "db", "upgrade", "--no-such-flag"])
    with pytest.raises(AssertionError):
        check_ray(["ray", "start", "--no-such-flag"])


def test_every_idem_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {f"IDEM_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        for key in env:
            if key.startswith("IDEM_"):
                assert key in fields, f"{name}: {key} is not a field of Settings"
                seen.add(key)
    assert {"IDEM_DATABASE_URL", "IDEM_RAY_DASHBOARD_URL", "IDEM_API_TOKENS"} <= seen


def test_api_token_list_parses_as_the_settings_expect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEM_API_TOKENS", '["s3cret-token"]')
    settings = Settings()
    assert [t.get_secret_value() for t in settings.api_tokens] == ["s3cret-token"]


def test_dependencies_exist_are_acyclic_and_ordered(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = {d: spec.get("condition", "service_started") for d, spec in deps.items()}
        for dep, condition in graph[name].items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must run once"
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str) -> None:
        assert state.get(node) != "visiting", f"dependency cycle through {node}"
        if state.get(node) == "done":
            return
        state[node] = "visiting"
        for dep in graph[node]:
            visit(dep)
        state[node] = "done"
        order.append(node)

    for node in graph:
        visit(node)
    position = {n: i for i, n in enumerate(order)}
    assert position["postgres"] < position["migrate"] < position["api"]
    assert position["migrate"] < position["queue-worker"]
    assert position["ray-head"] < position["ray-worker"]
    assert position["ray-head"] < position["queue-worker"]
    assert graph["api"]["migrate"] == "service_completed_successfully"


def test_cluster_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "ray-head", "ray-worker", "api", "queue-worker"}
    head = _argv(services["ray-head"]["command"])
    assert "--head" in head and "--dashboard-host=0.0.0.0" in head and "--block" in head
    worker = _argv(services["ray-worker"]["command"])
    assert "--address=ray-head:6379" in worker
    assert "ports" not in services["ray-worker"]  # so `--scale ray-worker=N` has no clash
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # The queue worker submits Ray Jobs to the head's dashboard (port from its command).
    dash_port = next(a.split("=")[1] for a in head if a.startswith("--dashboard-port="))
    queue_env = services["queue-worker"]["environment"]
    assert queue_env["IDEM_RAY_DASHBOARD_URL"] == f"http://ray-head:{dash_port}"
    assert queue_env["IDEM_RAY_TOKEN"] == services["ray-head"]["environment"]["RAY_AUTH_TOKEN"]
    assert Settings(ray_dashboard_url=queue_env["IDEM_RAY_DASHBOARD_URL"]).ray_jobs
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pgdata" in compose["volumes"]
    for service in services.values():  # published ports stay on the host's loopback
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:")
    images = {s.get("image") for n, s in services.items() if n != "postgres"}
    assert images == {"idemsweep:latest"}  # one image, built from the Dockerfile
    assert (ROOT / "Dockerfile").is_file()


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("idemcore", "service", "workers", "idemsweep", "migrations"):
        assert f"COPY {package} " in text
