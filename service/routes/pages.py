"""HTML pages: the sweeps page at ``GET /`` and ReDoc at ``GET /redoc``.

The sweeps page lists every sweep, newest first (Jinja2, autoescaped). It refreshes
itself (a meta refresh, no script) while any listed sweep is queued or running. It only
reads, like every GET of the API (open without a token); there are no write actions on it.

ReDoc's script comes from the installed fastapi-offline package (``DOCS_STATIC``). Its
bundle hard-codes one outside request, the "API docs by Redocly" logo from
cdn.redoc.ly (no option turns it off); the page's Content-Security-Policy refuses
images from anywhere but this server, so nothing leaves the machine (the logo's own
error handler then hides it).
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.deps import ReadSessionDep
from service.store import queries
from service.store.status import SWEEP_FINAL, TrialStatus

router = APIRouter(tags=["pages"])
REFRESH_S = 5
DOCS_STATIC = "/static-offline-docs"  # fastapi-offline's Swagger UI and ReDoc assets
REDOC_CSP = "img-src 'self' data:; connect-src 'self'"


@cache
def templates() -> Environment:
    """The page templates (package data under service/templates), autoescaped."""
    return Environment(
        loader=PackageLoader("service", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def sweeps_page(
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> HTMLResponse:
    """The sweeps, newest first, with progress, trials by status and links to each
    sweep's report, the Ray dashboard and its JSON."""
    sweeps, count = queries.list_sweeps(session, limit=limit)
    running = any(s.status not in SWEEP_FINAL for s in sweeps)
    html = (
        templates()
        .get_template("sweeps.html.j2")
        .render(
            sweeps=sweeps,
            count=count,
            statuses=[s.value for s in TrialStatus],
            refresh=REFRESH_S if running else None,
        )
    )
    return HTMLResponse(html)


@router.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this API's OpenAPI schema, with local assets only."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_CSP
    return page
