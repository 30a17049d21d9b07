"""`idem report SWEEP_ID --out DIR`: write a sweep's report page and figures.

Reads the store directly (``IDEM_DATABASE_URL`` or the SQLite file under
``IDEM_DATA_DIR``), so it works without the API running; the page is the same one
``GET /sweeps/{id}/report`` serves.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from idemsweep.errors import CliError, cli_settings


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write a sweep's HTML report and PNG figures")
    p.add_argument("sweep_id", type=int, metavar="SWEEP_ID")
    p.add_argument("--out", default="report", help="output directory (default ./report)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from service.exceptions import IdemError
    from service.report import build_report, load_report_data, write_report
    from service.store.engine import make_engine, require_current_schema, session_scope

    settings = cli_settings()
    engine = make_engine(settings.db_url)
    started = time.perf_counter()
    try:
        require_current_schema(engine)
        with session_scope(engine, readonly=True) as session:
            data = load_report_data(session, args.sweep_id)
        print(
            f"building the report of sweep {args.sweep_id} ({len(data.trials):,} runs) ...",
            file=sys.stderr,
            flush=True,
        )
        report = build_report(data)
    except IdemError as exc:
        raise CliError(exc.message) from None
    finally:
        engine.dispose()
    from service.report.text import verdict_lines

    page = write_report(report, args.out)
    print("The note's claims, per setting (Wilcoxon signed-rank by seed, Holm-corrected):")
    print("  (a) as good or better idempotent error; (b) fewer epochs to the threshold;")
    print("  n.d. = no difference shown; null-maps = holds, mostly through null-map collapses;")
    print("  'holds 3/4' = holds at 3 of 4 learning rates (one row each, `idem claims` lists them)")
    for line in verdict_lines(report.claims):
        print("  " + line)
    took = time.perf_counter() - started
    print(f"report: {page} ({len(report.figures)} figures beside it, built in {took:.1f} s)")
    return 0
