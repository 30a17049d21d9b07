"""Errors idemcore raises for bad configurations (never for a diverging run)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A trial configuration is invalid; the message names the field and the limit."""
