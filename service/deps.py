"""Route dependencies: one database session per request, the settings, and the token check.

``SessionDep`` opens one session per request through ``session_scope`` (commit on
success, rollback on error) and ends it before the response is sent (``scope="function"``),
so a client that got a 201 can read what it created. ``require_token`` guards the write
endpoints when ``IDEM_API_TOKENS`` is set; tokens are compared in constant time and never
logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.exceptions import Unauthorized
from service.settings import Settings
from service.spec import INT32_MAX
from service.store.engine import session_scope


def get_app_settings(request: Request) -> Settings:
    """The Settings the app was created with (never re-read from the environment)."""
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    """The app's one Engine (its connection pool is shared by all requests)."""
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session for the request: committed when the route returns, rolled back if it
    raises, closed either way."""
    with session_scope(engine) as session:
        yield session


def get_read_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """A session for a read-only request: on SQLite its transaction starts DEFERRED, so
    reads do not queue behind (or block) the workers' writes."""
    with session_scope(engine, readonly=True) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# Ids are INTEGER columns: the schema says so, so a client never sends one the store
# cannot hold (the API would refuse it with 422).
SweepId = Annotated[int, Path(ge=-INT32_MAX - 1, le=INT32_MAX, description="a sweep's id")]
TrialId = Annotated[int, Path(ge=-INT32_MAX - 1, le=INT32_MAX, description="a trial's id")]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="a token from IDEM_API_TOKENS")


def token_matches(presented: str, tokens: list[str]) -> bool:
    """Whether ``presented`` equals one of ``tokens``, in time independent of where they
    differ (every token is compared, so the match position does not leak either)."""
    given = presented.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode())
    return found


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a write without a valid ``Authorization: Bearer`` token when tokens are
    configured; with no tokens configured, everyone may write (the API binds 127.0.0.1)."""
    if not settings.api_tokens:
        return
    tokens = [t.get_secret_value() for t in settings.api_tokens]
    if credentials is None or not token_matches(credentials.credentials, tokens):
        raise Unauthorized()


WriteAccess = Depends(require_token)
