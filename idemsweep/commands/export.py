"""`idem export` (a sweep's trials or epoch rows as CSV/Parquet) and `idem delete`.

Both talk to the API through ``idemsweep.client.Client`` (`IDEM_URL`, `IDEM_TOKEN`).
"""

from __future__ import annotations

import argparse
from typing import Any

from idemsweep.errors import CliError


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write a sweep's trials or epoch rows to CSV or Parquet")
    p.add_argument("id", type=int, metavar="SWEEP")
    p.add_argument("--what", choices=["trials", "epochs"], default="trials")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(handler=export)

    p = sub.add_parser("delete", help="delete a finished or cancelled sweep")
    p.add_argument("id", type=int, metavar="SWEEP")
    p.set_defaults(handler=delete)


def export(args: argparse.Namespace) -> int:
    """Stream the table into the file (nothing is left there when the request fails)."""
    from idemsweep.client import ClientError
    from idemsweep.commands.client import make_client

    with make_client() as client:
        try:
            size = client.export(args.id, args.what, args.format, args.output)
        except ClientError as exc:
            raise CliError(str(exc)) from None
    print(f"sweep {args.id}: {args.what} written to {args.output} ({size} bytes)")
    return 0


def delete(args: argparse.Namespace) -> int:
    from idemsweep.client import ClientError
    from idemsweep.commands.client import make_client

    with make_client() as client:
        try:
            answer = client.delete(args.id)
        except ClientError as exc:
            raise CliError(str(exc)) from None
    print(f"sweep {args.id} deleted ({answer['trials']} trials, {answer['epochs']} epoch rows)")
    return 0
