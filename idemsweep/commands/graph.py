"""`idem graph`: render the gradient computation graph, like the note's §2.2 sanity check."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from idemsweep.errors import CliError

FORMATS = ("svg", "pdf", "png", "dot")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "graph", help="render the weight-gradient graph of one step (torchviz + graphviz)"
    )
    p.add_argument("--arch", default="N1", help="N1..N4, B1..B4 (the note uses N1)")
    p.add_argument("--algorithm", required=True, choices=["ordinary", "modified"])
    p.add_argument("--out", required=True, help="output file: .svg, .pdf, .png or .dot")
    p.add_argument("--batch", type=int, default=3, help="rows of x (the note uses 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise CliError(f"--out: unknown extension {out.suffix!r}; use one of {list(FORMATS)}")
    if args.batch < 1:
        raise CliError(f"--batch: must be a positive integer, got {args.batch}")
    if fmt != "dot" and shutil.which("dot") is None:
        raise CliError(
            "graphviz's 'dot' is not installed: apt-get install graphviz (scripts/setup.sh does)"
        )

    import warnings

    import torch
    from torchviz import make_dot

    from idemcore.architectures import input_dim
    from idemcore.errors import ConfigError
    from idemcore.losses import gradient_with_graph
    from idemcore.nets import build_net

    try:
        net = build_net(args.arch, seed=args.seed, dtype=torch.float64)
        dim = input_dim(args.arch)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    x = torch.randn(args.batch, dim, generator=torch.Generator().manual_seed(args.seed))
    grads = gradient_with_graph(net, x.to(torch.float64), args.algorithm)
    # The first layer's weight gradient, as in the note (net.main[0].weight.grad).
    with warnings.catch_warnings():  # torchviz 0.0.3 still uses distutils' LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        dot = make_dot(
            grads[0], params=dict(net.named_parameters()), show_attrs=True, show_saved=True
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(dot.source)
    else:
        out.write_bytes(dot.pipe(format=fmt))
    print(f"wrote {out}")
    return 0
