"""Subcommands of `idem`: each module defines ``register(subparsers)``."""
