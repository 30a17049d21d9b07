"""Domain errors: one small hierarchy, each class's docstring is its default message.

The API maps these to HTTP status codes in one exception handler; the workers and the
CLI print them. Nothing here imports FastAPI.
"""

from __future__ import annotations


class IdemError(Exception):
    """An idemsweep operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The one-line message shown to users."""
        return str(self.args[0]) if self.args else ""


class NotFound(IdemError):
    """The requested object does not exist."""


class SweepFinished(IdemError):
    """The sweep has already finished; it can no longer be cancelled or changed."""


class SweepInUse(IdemError):
    """The sweep cannot be deleted now: it has not finished, or other sweeps reuse its runs."""


class InvalidTransition(IdemError):
    """That status change is not allowed."""


class LeaseLost(IdemError):
    """This worker no longer holds the sweep's lease (it was requeued or claimed elsewhere)."""


class SchemaNotCurrent(IdemError):
    """The database schema is not at the current version; run: idem db upgrade"""


class SpecInvalid(IdemError):
    """The sweep spec is invalid."""


class LimitExceeded(IdemError):
    """The request exceeds a configured limit."""


class Unauthorized(IdemError):
    """Missing or invalid API token."""


class InvalidQuery(IdemError):
    """The query names an unknown field or metric."""


class DuplicateIdempotencyKey(IdemError):
    """That Idempotency-Key was already used for another request."""


# --- Field-level errors of a request (appended by the API; mapped to 422 with ``loc``) ---


class FieldInvalid(IdemError):
    """A field of the request is invalid."""

    def __init__(self, loc: list[str | int], message: str, **extra: object) -> None:
        super().__init__(message)
        self.loc = list(loc)
        self.extra = extra

    def detail(self) -> dict[str, object]:
        """One entry of a 422 body: the field path, the message and any extra facts."""
        return {"loc": self.loc, "msg": self.message, "type": self.kind, **self.extra}

    kind = "value_error"


class SpecFieldError(FieldInvalid, SpecInvalid):
    """A field of the sweep spec is invalid."""


class QueryFieldError(FieldInvalid, InvalidQuery):
    """A query parameter names an unknown field, metric or algorithm."""


class SpecLimitError(FieldInvalid, LimitExceeded):
    """The sweep spec exceeds a configured limit."""

    kind = "limit_exceeded"

    def __init__(self, loc: list[str | int], what: str, limit: int, setting: str) -> None:
        super().__init__(
            loc, f"{what} exceeds the limit of {limit} ({setting})", limit=limit, setting=setting
        )
