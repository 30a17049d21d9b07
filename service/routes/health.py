"""``GET /health``: the process is up and its database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from idemcore import __version__
from service.deps import ReadSessionDep
from service.schemas import HealthPublic

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=HealthPublic)
def health(session: ReadSessionDep) -> HealthPublic:
    """Answers ``ok`` after a ``SELECT 1`` round trip to the store."""
    session.execute(text("SELECT 1"))
    return HealthPublic(status="ok", database=session.get_bind().dialect.name, version=__version__)
