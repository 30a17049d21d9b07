"""`idem train`: one run of idemcore from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from idemcore.config import ALGORITHMS, DATA_SOURCES, DTYPES, INITS, OPTIMIZERS, TrialConfig
from idemsweep.errors import CliError


def _default(name: str) -> Any:
    """TrialConfig's default for a field, so the CLI never spells one of its own."""
    return TrialConfig.__dataclass_fields__[name].default


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train one network and print its metrics")
    # Every option's dest is the TrialConfig field it sets (run() passes them through).
    p.add_argument("--arch", dest="architecture", required=True, help="N1..N4, B1..B4")
    p.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    p.add_argument("--lr", dest="learning_rate", type=float, required=True, help="learning rate")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=_default("data"), choices=DATA_SOURCES)
    p.add_argument("--data-path", help="the .npz/.npy/IDX file for --data file")
    p.add_argument("--threshold", type=float, default=_default("threshold"))
    p.add_argument("--init", default=_default("init"), choices=INITS)
    p.add_argument(
        "--init-std", type=float, default=_default("init_std"), help="std for --init normal"
    )
    p.add_argument("--gain", type=float, default=_default("gain"))
    p.add_argument("--dtype", default=_default("dtype"), choices=DTYPES)
    p.add_argument(
        "--optimizer",
        default=_default("optimizer"),
        choices=OPTIMIZERS,
        help="sgd (the note's), momentum (SGD, 0.9) or adam (PyTorch defaults but lr)",
    )
    p.add_argument("--eval-samples", type=int, default=_default("eval_samples"))
    p.add_argument("--device", default=_default("device"), help="cpu, cuda, cuda:0, ...")
    p.add_argument(
        "--tf32",
        action="store_true",
        help="let float32 CUDA matmuls use TF32 (off by default: it changes results)",
    )
    p.add_argument("--json", action="store_true", help="last stdout line: the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from idemcore.errors import ConfigError
    from idemcore.provenance import apply_numerics
    from idemcore.train import Training

    try:
        device_class = torch.device(args.device).type
    except RuntimeError as exc:
        raise CliError(f"--device: {exc}") from None
    try:
        values = {f.name: getattr(args, f.name) for f in fields(TrialConfig)}
        config = TrialConfig(**{**values, "device": device_class})
        apply_numerics(config.tf32)
        run_ = Training(config, device=args.device)
    except ConfigError as exc:
        raise CliError(str(exc)) from None

    show_bar = sys.stderr.isatty()
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, unit="epoch", file=sys.stderr)
    for record in run_.epochs():
        if show_bar:
            bar.update(1)
            bar.set_postfix(
                err=f"{record.idempotent_error:.3g}"
                if record.idempotent_error is not None
                else "nan"
            )
    if show_bar:
        bar.close()
    result = run_.result()
    payload = result.to_dict()
    if args.json:
        print(json.dumps(payload))
    else:
        for key, value in payload.items():
            if key == "eigenvalues" and value is not None:
                value = ", ".join(
                    f"{re:.4g}" + (f"{im:+.3g}i" if abs(im) > 1e-12 else "") for re, im in value
                )
            print(f"{key:>24}: {value}")
    return 0
