"""`idem calibrate`: the first step's size per algorithm and learning rate, on this machine.

One update from each seed's initialization per (algorithm, learning rate), no training:
the matched pairs, and with ``--suggest`` a per-algorithm ``learning_rates`` mapping for a
spec. The same request and answer as ``POST /calibrate`` (service.calibration), without
the API's size bounds: the computation is the caller's own.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from idemsweep.errors import CliError


def register(sub: Any) -> None:
    from service.calibration import DEFAULT_BATCH_SIZE
    from service.spec import ALGORITHM_NAMES, OPTIMIZER_NAMES

    p = sub.add_parser(
        "calibrate",
        help="measure each algorithm's first step per learning rate; suggest matched rates",
    )
    # Every option's dest is the CalibrateRequest field it sets (run() passes them through).
    p.add_argument("--arch", dest="architecture", required=True, help="N1..N4, B1..B4")
    p.add_argument(
        "--algorithms", nargs="+", default=["modified", "ordinary"], choices=ALGORITHM_NAMES
    )
    p.add_argument(
        "--lr", dest="learning_rates", nargs="+", type=float, required=True, help="learning rates"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"samples in the one batch (default {DEFAULT_BATCH_SIZE}; the step's size "
        "barely depends on it)",
    )
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZER_NAMES)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument(
        "--suggest",
        action="store_true",
        help="print a per-algorithm learning_rates mapping whose steps match (×1.25)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.calibration import CalibrateRequest, render_text, run_calibration
    from service.exceptions import FieldInvalid

    body = {name: getattr(args, name) for name in CalibrateRequest.model_fields}
    try:
        request = CalibrateRequest.model_validate(body)
        result = run_calibration(request)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Field names and list indexes; pydantic's union-member tags ("constrained-str",
        # "list[LayerSpec]") are not identifiers and name no field.
        where = ".".join(
            str(p) for p in first["loc"] if isinstance(p, int) or str(p).isidentifier()
        )
        raise CliError(f"{where}: {first['msg']}") from None
    except FieldInvalid as exc:
        raise CliError(f"{'.'.join(str(p) for p in exc.loc[1:])}: {exc.message}") from None
    if args.json:
        print(json.dumps(result.model_dump(), indent=2))
    else:
        print(render_text(result), end="")
    return 0
