"""`idem` entry point. Each module in idemsweep.commands registers one or more subcommands.

Command modules import their heavy dependencies (Ray, FastAPI, SQLAlchemy) inside their
handlers, so `idem train` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import NoReturn

from idemsweep import commands
from idemsweep.errors import CliError


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line (what is wrong) and exit code 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = OneLineParser(
        prog="idem", description="idemsweep: sweeps of modified backprop for idempotent nets"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"idemsweep.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen command; a CliError exits 2 with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except CliError as exc:
        print(f"idem {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
