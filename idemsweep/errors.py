"""Errors the CLI turns into a one-line message and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing CLI failure; printed as one line, exit code 2 unless said otherwise."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
