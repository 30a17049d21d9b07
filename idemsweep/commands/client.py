"""The API's command-line client: submit, status, summary, compare, claims, cancel, sweeps,
export, delete; every request goes through ``idemsweep.client.Client`` (the notebook client).

`IDEM_URL` (default http://127.0.0.1:8000) chooses the server and `IDEM_TOKEN` the bearer
token. Every failure (a malformed spec file, an unreachable server, a 4xx answer) is one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import uuid
from typing import Any

from idemsweep.client import DEFAULT_URL, SUMMARY_BY, Client, ClientError
from idemsweep.client import read_specs as client_read_specs
from idemsweep.errors import CliError


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit a sweep spec (JSON or YAML) to the API")
    p.add_argument("spec", help="SPEC.json or SPEC.yaml")
    p.add_argument("--wait", action="store_true", help="show progress until it ends")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="run every trial anew (sets the spec's reuse: false) instead of taking over "
        "stored results with the same reuse key",
    )
    p.set_defaults(handler=submit)

    _command(sub, "status", "a sweep's status and progress", status)

    p = _command(sub, "summary", "per-group statistics of a metric", summary)
    p.add_argument("--by", default=SUMMARY_BY, help=f"group fields (default {SUMMARY_BY})")
    p.add_argument("--metric", default="idempotent_error")
    p.add_argument("--epoch", type=int, default=None, help="the metric at this epoch")

    p = _command(sub, "compare", "paired comparison of two algorithms", compare)
    p.add_argument("--a", default="modified")
    p.add_argument("--b", default="ordinary")
    p.add_argument("--metric", default="idempotent_error")
    p.add_argument("--epoch", type=int, default=None)

    _command(sub, "claims", "the report's answer table: each claim, each way", claims)
    _command(sub, "cancel", "cancel a sweep", cancel, with_json=False)

    p = _command(sub, "sweeps", "list sweeps", sweeps, with_id=False)
    p.add_argument("--status", default=None)
    p.add_argument("--limit", type=int, default=50)


def _command(
    sub: Any, name: str, help: str, handler: Any, *, with_id: bool = True, with_json: bool = True
) -> Any:
    """A subcommand that reads one sweep (``ID``) and can print the API's JSON (``--json``)."""
    p = sub.add_parser(name, help=help)
    if with_id:
        p.add_argument("id", type=int)
    if with_json:
        p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(handler=handler)
    return p


# --- talking to the server (the HTTP layer is idemsweep.client.Client) -------------


def base_url() -> str:
    return os.environ.get("IDEM_URL", DEFAULT_URL).rstrip("/")


def make_client() -> Client:
    """The notebook client, for `IDEM_URL` with `IDEM_TOKEN`."""
    return Client(base_url(), token=os.environ.get("IDEM_TOKEN") or None)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One request; returns the decoded JSON. Network failures and 4xx/5xx become one
    CliError line (the API's message)."""
    with make_client() as client:
        try:
            return client.request(method, path, **kwargs)
        except ClientError as exc:
            raise CliError(str(exc)) from None


def read_specs(path: str) -> list[dict[str, Any]]:
    """The spec file's sweeps as dicts (see ``idemsweep.client.read_specs``); one-line
    errors."""
    try:
        return client_read_specs(path)
    except ClientError as exc:
        raise CliError(str(exc)) from None


# --- output ------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# The comparison engine's numbers per row (service.schemas.PairedPublic), in print order.
COMPARE_STATS = [
    "pairs", "a_wins", "b_wins", "ties", "effect", "ci_low", "ci_high", "p", "p_corrected",
]  # fmt: skip


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as a text table (rich): a header, a rule, numbers right-aligned; never
    wrapped or cut, whatever the terminal's width (wide tables scroll)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        numeric = any(isinstance(row.get(column), int | float) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out = io.StringIO()
    Console(file=out, width=100_000, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines() if line.strip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- commands ----------------------------------------------------------------------


def submit(args: argparse.Namespace) -> int:
    """POST each sweep in the file (several YAML documents: several sweeps)."""
    created_ids = []
    for spec in read_specs(args.spec):
        if args.no_reuse:
            spec = {**spec, "reuse": False}
        created = call("POST", "/sweeps", json=spec, headers={"Idempotency-Key": str(uuid.uuid4())})
        line = (
            f"sweep {created['id']} {created['status']}: {created['trial_count']} trials "
            f"({created['reused_trials']} reused)"
        )
        print(line)
        for s in created.get("skipped", []):
            print(f"  skipped ({s['architecture']}, {s['algorithm']}): {s['reason']}")
        created_ids.append(created["id"])
    if not args.wait:
        return 0
    code = 0
    for sweep_id in created_ids:
        sweep = wait_for(sweep_id, args.interval)
        print(f"sweep {sweep['id']} {sweep['status']}")
        _print_summary(sweep["id"], SUMMARY_BY, "idempotent_error", None)
        code = code or (0 if sweep["status"] == "succeeded" else 1)
    return code


def wait_for(sweep_id: int, interval: float) -> dict[str, Any]:
    """Poll the sweep until it ends, with a progress bar on stderr."""
    with make_client() as client:
        try:
            return client.wait(sweep_id, progress=True, interval=interval)
        except ClientError as exc:
            raise CliError(str(exc)) from None


def status(args: argparse.Namespace) -> int:
    sweep = call("GET", f"/sweeps/{args.id}")
    if args.json:
        _print_json(sweep)
        return 0
    print(f"sweep {sweep['id']} ({sweep['name']}): {sweep['status']}")
    print(f"  trials    {sweep['trial_count']}  progress {sweep['progress']:.0%}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(sweep["trials_by_status"].items()) if v)
    print(f"  by status {counts or '-'}")
    for key in ("created_at", "started_at", "finished_at", "ray_dashboard_url", "error"):
        if sweep.get(key):
            print(f"  {key:<10}{sweep[key]}")
    return 0


def _print_summary(sweep_id: int, by: str, metric: str, epoch: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"by": by, "metric": metric}
    if epoch is not None:
        params["epoch"] = epoch
    data: dict[str, Any] = call("GET", f"/sweeps/{sweep_id}/summary", params=params)
    stats = ["n", "mean", "std", "min", "median", "max", "diverged", "never"]
    print(f"{metric}" + (f" at epoch {epoch}" if epoch else ""))
    print(format_table(data["data"], data["by"] + stats))
    return data


def summary(args: argparse.Namespace) -> int:
    if args.json:
        params: dict[str, Any] = {"by": args.by, "metric": args.metric}
        if args.epoch is not None:
            params["epoch"] = args.epoch
        _print_json(call("GET", f"/sweeps/{args.id}/summary", params=params))
        return 0
    _print_summary(args.id, args.by, args.metric, args.epoch)
    return 0


def compare(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"a": args.a, "b": args.b, "metric": args.metric}
    if args.epoch is not None:
        params["epoch"] = args.epoch
    data = call("GET", f"/sweeps/{args.id}/compare", params=params)
    if args.json:
        _print_json(data)
        return 0
    direction = f"{data['better']} is better" if data["better"] else "no win direction"
    print(
        f"{data['a']} vs {data['b']} on {data['metric']} ({direction}; effect = median "
        f"{data['transform']}, p Holm-corrected over these rows, alpha {data['alpha']:g})"
    )
    stats = [*COMPARE_STATS, "verdict"]
    print(format_table(data["data"], data["by"] + stats))
    return 0


# The columns `idem claims` prints (the setting first, then the engine's numbers).
CLAIM_COLUMNS = [
    "architecture", "samples", "batch_size", "data", "init", "optimizer", "a", "b", "claim",
    "way", "lr_a", "lr_b", *COMPARE_STATS, "verdict", "null_map_share",
]  # fmt: skip


def claims(args: argparse.Namespace) -> int:
    data = call("GET", f"/sweeps/{args.id}/claims")
    if args.json:
        _print_json(data)
        return 0
    print(
        f"sweep {data['sweep_id']}: {data['count']} rows; p Holm-corrected over all rows, "
        f"alpha {data['alpha']:g}; effect = median log10 ratio (claim a) or epochs (claim b)"
    )
    print(format_table(data["data"], CLAIM_COLUMNS))
    return 0


def cancel(args: argparse.Namespace) -> int:
    data = call("POST", f"/sweeps/{args.id}/cancel")
    print(f"sweep {data['id']}: cancel requested ({data['status']})")
    return 0


def sweeps(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    data = call("GET", "/sweeps", params=params)
    if args.json:
        _print_json(data)
        return 0
    rows = [{**s, "progress": f"{s['progress']:.0%}"} for s in data["data"]]
    print(format_table(rows, ["id", "name", "status", "trial_count", "progress", "created_at"]))
    print(f"{data['count']} sweeps")
    return 0
