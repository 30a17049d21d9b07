"""`idem db upgrade` / `idem db current`: apply and inspect the store's migrations."""

from __future__ import annotations

import argparse
from typing import Any

from idemsweep.errors import CliError, cli_settings


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database migrations (upgrade, current)")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="migrate the database to the newest schema")
    up.add_argument("--url", default=None, help="database URL (default: IDEM_DATABASE_URL)")
    up.set_defaults(handler=run_upgrade)
    cur = dbsub.add_parser("current", help="print the database's schema revision and head")
    cur.add_argument("--url", default=None, help="database URL (default: IDEM_DATABASE_URL)")
    cur.set_defaults(handler=run_current)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    return cli_settings().db_url


def run_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from service.store.engine import head_revision, upgrade_database

    url = _url(args)
    try:
        upgrade_database(url)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot migrate {_safe(url)}: {exc.__class__.__name__}: {exc}") from exc
    print(f"database {_safe(url)} is at {head_revision()} (head)")
    return 0


def run_current(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from service.store.engine import current_revision, head_revision, make_engine

    url = _url(args)
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read {_safe(url)}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "behind: run `idem db upgrade`"
    print(f"current: {current or '(empty)'}  head: {head}  ({state})")
    return 0 if current == head else 1


def _safe(url: str) -> str:
    """The URL with any password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
