"""The FastAPI application: ``create_app(settings)`` builds it, one include per router.

Domain errors (``service.exceptions``) become 4xx answers in one place here; anything
else is a 500 whose body says only that (no stack trace, no exception text). Request
bodies over ``max_body_bytes`` get 413 before they are read whole. CORS is closed unless
``IDEM_CORS_ORIGINS`` names origins. The app refuses a database not at the current schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idemcore import __version__
from service.exceptions import (
    DuplicateIdempotencyKey,
    FieldInvalid,
    IdemError,
    InvalidQuery,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    SchemaNotCurrent,
    SpecInvalid,
    SweepFinished,
    SweepInUse,
    Unauthorized,
)
from service.report.cache import ReportCache
from service.routes import (
    calibrate,
    claims,
    exports,
    health,
    pages,
    plots,
    report,
    results,
    sweeps,
    trials,
)
from service.settings import Settings, get_settings
from service.store.engine import make_engine, require_current_schema

log = logging.getLogger("idemsweep.api")

# Domain error → HTTP status. The first matching class (in this order) wins.
STATUS_FOR: list[tuple[type[IdemError], int]] = [
    (NotFound, 404),
    (SweepFinished, 409),
    (SweepInUse, 409),
    (DuplicateIdempotencyKey, 409),
    (InvalidTransition, 409),
    (Unauthorized, 401),
    (FieldInvalid, 422),
    (SpecInvalid, 422),
    (LimitExceeded, 422),
    (InvalidQuery, 422),
    (SchemaNotCurrent, 503),
]


def status_for(exc: IdemError) -> int:
    """The HTTP status of a domain error (400 for one not listed)."""
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code
    return 400


class BodyTooLarge(HTTPException):
    """Raised while the body streams in, so FastAPI passes it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (IDEM_MAX_BODY_BYTES)")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by Content-Length up front and
    by counting the streamed bytes (a chunked body has no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = BodyTooLarge(self.max_bytes)
        response = JSONResponse({"detail": exc.detail}, status_code=413)
        await response(scope, receive, send)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic's errors without ``input``/``ctx`` (they may echo huge or non-JSON values,
    such as NaN) but with the field path and message."""
    out = []
    for err in errors:
        item = {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": err.get("type", ""),
        }
        out.append(item)
    return out


def database_is_away(exc: OperationalError) -> bool:
    """A lost/refused connection (psycopg's OperationalError) or a locked SQLite file, as
    opposed to a broken statement (SQLite reports "no such table" as OperationalError too)."""
    orig = exc.orig
    return (
        bool(exc.connection_invalidated)
        or type(orig).__module__.startswith("psycopg")
        or "database is locked" in str(orig)
    )


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(FieldInvalid)
    async def field_invalid(request: Request, exc: FieldInvalid) -> JSONResponse:
        return JSONResponse({"detail": [exc.detail()]}, status_code=422)

    @app.exception_handler(IdemError)
    async def domain_error(request: Request, exc: IdemError) -> JSONResponse:
        code = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _clean_validation_errors(exc.errors())}, status_code=422)

    async def number_out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # An id or filter past the columns' integer range (32 bits on PostgreSQL, which
        # refuses to cast it; 64 bits on SQLite, whose driver cannot bind it): no stored
        # row can match such a number, so it is the client's error (422), not a 500.
        if isinstance(exc, DataError) and type(exc.orig).__name__ != "NumericValueOutOfRange":
            return await unexpected(request, exc)
        detail = {"loc": ["request"], "msg": "a number is out of range", "type": "value_error"}
        return JSONResponse({"detail": [detail]}, status_code=422)

    app.add_exception_handler(OverflowError, number_out_of_range)
    app.add_exception_handler(DataError, number_out_of_range)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database restarted or is locked: transient, so 503 and a hint to retry (the
        # pool's pre-ping reconnects on the next request). No exception text is echoed.
        if not database_is_away(exc):
            return await unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "database unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged here with its traceback; the client learns only that it happened.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)


def _schema_states_limits(app: FastAPI, settings: Settings) -> None:
    """Put this server's configured limits into its OpenAPI schema (``max_epochs`` as the
    maximum of ``epochs``), so a client generated from /openapi.json agrees with it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            spec = schema.get("components", {}).get("schemas", {}).get("SweepSpec", {})
            epochs = spec.get("properties", {}).get("epochs")
            if epochs is not None:
                epochs["maximum"] = min(int(epochs.get("maximum", 2**31 - 1)), settings.max_epochs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: the environment's).

    Raises ``SchemaNotCurrent`` when the database is not at the current migration, so a
    server never starts against a schema it does not understand.
    """
    settings = settings or get_settings()
    own_engine = engine is None
    engine = engine or make_engine(settings.db_url)
    try:
        require_current_schema(engine)
    except Exception:
        if own_engine:
            engine.dispose()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.report_cache.close()
        if own_engine:
            engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the installed fastapi-offline
    # package (served under DOCS_STATIC), not from a CDN: they work offline. /redoc is
    # pages.redoc (it adds a Content-Security-Policy).
    app = FastAPIOffline(
        title="idemsweep",
        version=__version__,
        summary="Sweeps of modified backprop for idempotent neural networks",
        lifespan=lifespan,
        static_url=pages.DOCS_STATIC,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.report_cache = ReportCache()
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _add_exception_handlers(app)
    _schema_states_limits(app, settings)
    for module in (
        pages,
        health,
        sweeps,
        trials,
        results,
        claims,
        exports,
        plots,
        report,
        calibrate,
    ):
        app.include_router(module.router)
    return app
