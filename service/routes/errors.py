"""The error responses the routes document: an ErrorPublic body per status with what it
means; the meanings routes share are written here once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.schemas import ErrorPublic

Responses = dict[int | str, dict[str, Any]]

# What a status means where the routes agree.
MEANINGS: dict[int, str] = {
    401: "missing or wrong bearer token",
    404: "no such sweep",
    409: "the sweep has finished",
    413: "body over IDEM_MAX_BODY_BYTES",
    422: "invalid field (loc names it) or limit",
}


def errors(*codes: int, own: Mapping[int, str] | None = None) -> Responses:
    """OpenAPI ``responses`` for ``codes`` with their shared meanings, then for the
    statuses a route explains in its ``own`` words, each an ErrorPublic body."""
    meanings = {**{code: MEANINGS[code] for code in codes}, **(own or {})}
    return {code: {"model": ErrorPublic, "description": text} for code, text in meanings.items()}
