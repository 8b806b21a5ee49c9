"""The FastAPI app of the Paceline view, mounted by the Airflow api-server under ``/paceline``.

Every route but the nav icon requires a logged-in Airflow user: the same check as the REST API
(``requires_authenticated``: a Bearer token, or the ``_token`` cookie the UI's login sets), so the
page opened from the nav bar (an iframe of the same origin) is authenticated by the UI's own
session. A browser that opens the page without a session is sent to the login form.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from paceline.ui import page, queries

URL_PREFIX = "/paceline"
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 3v18h18"/>'
    '<rect x="7" y="12" width="3" height="6"/><rect x="12" y="8" width="3" height="10"/>'
    '<rect x="17" y="4" width="3" height="14"/></svg>'
)


def _require_user() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return requires_authenticated()


authenticated = [Depends(_require_user())]

app = FastAPI(title="Paceline", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(HTTPException)
async def _login_or_error(request: Request, exc: HTTPException) -> Response:
    """The page itself sends a browser without a session to Airflow's login form; the API answers."""
    relative = request.url.path.removeprefix(request.scope.get("root_path", ""))
    if exc.status_code in (401, 403) and relative in ("", "/"):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.get("/icon.svg", include_in_schema=False)
def icon() -> Response:
    return Response(ICON, media_type="image/svg+xml")


@app.get("/", response_class=HTMLResponse, dependencies=authenticated)
def index() -> HTMLResponse:
    data, errors = page.collect(None)
    html = page.render(data["quota"], data["freshness"], data["racing"], data["nba"], errors=errors)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _dsn() -> str:
    from paceline.db.warehouse import dsn_from_airflow

    return dsn_from_airflow()


@app.get("/api/summary", dependencies=authenticated)
def summary() -> dict[str, Any]:
    data, errors = page.collect(None)
    return {**data, "errors": errors}


@app.get("/api/quota", dependencies=authenticated)
def quota() -> dict[str, Any]:
    return queries.quota(_dsn())


@app.get("/api/freshness", dependencies=authenticated)
def freshness() -> dict[str, Any]:
    return queries.freshness(_dsn())


@app.get("/api/racing-coverage", dependencies=authenticated)
def racing_coverage() -> dict[str, Any]:
    return queries.racing_calendar(_dsn())


@app.get("/api/nba-null-share", dependencies=authenticated)
def nba_null_share() -> dict[str, Any]:
    return queries.nba_null_share()
