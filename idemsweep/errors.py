"""Errors the CLI turns into a one-line message and an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings


class CliError(Exception):
    """A user-facing CLI failure; printed as one line, exit code 2 unless said otherwise."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def cli_settings() -> Settings:
    """The process's Settings; a bad ``IDEM_*`` value becomes a one-line CliError (exit 2)."""
    from service.settings import SettingsInvalid, get_settings

    try:
        return get_settings()
    except SettingsInvalid as exc:
        raise CliError(str(exc)) from None
