"""`idem api`: serve the REST API with uvicorn.

Binds 127.0.0.1 unless told otherwise, and refuses any other address while no API
tokens are configured (an open write endpoint on a network is a remote job launcher).
Refuses a database that is not at the current schema, naming `idem db upgrade`.
"""

from __future__ import annotations

import argparse
from typing import Any

from idemsweep.errors import CliError, cli_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the REST API (uvicorn)")
    p.add_argument("--host", default=None, help="address to bind (default IDEM_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default IDEM_PORT, 8000)")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes (uvicorn workers, default 1); each has its own database "
        "connection pool and report cache",
    )
    p.set_defaults(handler=run)


def check_bind(host: str, has_tokens: bool) -> None:
    """Refuse a non-loopback address without tokens (CliError naming IDEM_API_TOKENS)."""
    if host not in LOOPBACK and not has_tokens:
        raise CliError(
            f"refusing to bind {host} without authentication: set IDEM_API_TOKENS "
            "(e.g. IDEM_API_TOKENS=a-long-random-token) or bind 127.0.0.1"
        )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.exceptions import SchemaNotCurrent

    if args.workers < 1:
        raise CliError(f"--workers: must be a positive integer, got {args.workers}")
    settings = cli_settings()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    check_bind(host, bool(settings.api_tokens))
    try:
        app = create_app(settings)  # checks the schema before any worker starts
    except SchemaNotCurrent as exc:
        raise CliError(exc.message) from None
    if args.workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=args.log_level)
        return 0
    # Several processes: uvicorn imports the factory in each, which reads the same
    # environment (IDEM_*) as this one.
    app.state.engine.dispose()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        workers=args.workers,
        host=host,
        port=port,
        log_level=args.log_level,
    )
    return 0
