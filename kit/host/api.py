"""The JSON API under /api: bearer-token authentication, no cookies, so no CSRF token.

Also home of what both routers share: the Host dependency and the Refused exception.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from kit.host import admin

if TYPE_CHECKING:
    from kit.host.app import Host

router = APIRouter(prefix="/api")


class Refused(Exception):
    """Raised by a request helper to answer with this response instead of the route's own."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


async def answer_refused(request: Request, refused: Refused) -> Response:
    """The exception handler create_app installs for Refused."""
    return refused.response


async def current_host(request: Request) -> Host:
    # async, so FastAPI resolves it on the event loop rather than a worker thread
    return request.app.state.host


HostDep = Annotated["Host", Depends(current_host)]


def bearer_team(request: Request, host: HostDep) -> dict:
    """The caller's team from `Authorization: Bearer TOKEN`; a bad token counts as a failed login."""
    if host.locked_out(request):
        raise Refused(JSONResponse({"error": "too many failed logins: wait a few minutes"}, 429))
    team = host.bearer_team(request)
    if team is None:
        host.failed(request)
        raise Refused(
            JSONResponse(
                {"error": "missing or invalid token: send Authorization: Bearer TOKEN"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
    return team


BearerTeam = Annotated[dict, Depends(bearer_team)]  # sync: FastAPI runs it on a worker thread


def submission_row(row: dict, *, revealed: bool) -> dict:
    """A team's own submission as the API shows it (private score only after reveal)."""
    shown = {
        k: row[k]
        for k in (
            "id",
            "submitted_at",
            "message",
            "file_name",
            "public_score",
            "public_low",
            "public_high",
            "final",
        )
    }
    if revealed:
        shown["private_score"] = row.get("private_score")
    return shown


@router.get("/competition")
def competition(host: HostDep):
    values = host.settings()
    return {
        "name": values["name"],
        "title": values["title"],
        "metric": values["metric"],
        "greater_is_better": values["greater_is_better"],
        "daily_limit": values["daily_limit"],
        "max_finals": values["max_finals"],
        "team_size": values["team_size"],
        "state": admin.state(values),
        "start": values["start"] or None,
        "deadline": values["end"] or None,
        "format": values["format"],
        "id_column": values["id_column"],
        "target_column": values["target_column"],
    }


@router.get("/me")
def me(host: HostDep, team: BearerTeam):
    values = host.settings()
    return {
        "team": team["name"],
        "role": team["role"],
        "remaining_today": host.remaining(team, values),
    }


@router.post("/submissions")
async def submit(request: Request, host: HostDep, team: BearerTeam):
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return JSONResponse({"error": "send the CSV as the multipart field 'file'"}, 400)
    data = await upload.read()
    message = str(form.get("message") or "")
    key = request.headers.get("idempotency-key")
    status, body = await anyio.to_thread.run_sync(
        host.submit,
        team,
        data,
        upload.filename,
        message,
        key[:200] if key else None,
        limiter=host.limiter,
    )
    return JSONResponse(body, status)


@router.get("/submissions")
def submissions(host: HostDep, team: BearerTeam):
    revealed = admin.state(host.settings()) == "revealed"
    rows = host.store.team_submissions(team["id"], private=revealed)
    return [submission_row(r, revealed=revealed) for r in rows]


@router.get("/leaderboard")
def leaderboard(host: HostDep):
    values = host.settings()
    revealed = admin.state(values) == "revealed"
    rows = host.leaderboard(values, private=revealed)
    return {
        "state": admin.state(values),
        "metric": values["metric"],
        "rows": [admin.public_view(r) for r in rows],
    }


@router.post("/finals")
async def finals(request: Request, host: HostDep, team: BearerTeam):
    try:
        ids = (await request.json())["ids"]
        ids = [int(i) for i in ids]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'send JSON {"ids": [submission ids]}'}, 400)
    status, body = await anyio.to_thread.run_sync(host.set_finals, team, ids)
    return JSONResponse(body, status)


@router.get("/files")
def files(host: HostDep, team: BearerTeam):
    return [
        {
            "name": name,
            "size": path.stat().st_size,
            "creation_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime)),
        }
        for name, path in sorted(host.public_files().items())
    ]


@router.get("/files/{name}")
def file(name: str, host: HostDep, team: BearerTeam):
    path = host.public_files().get(name)  # only the published files, by exact name
    if path is None:
        return JSONResponse({"error": f"no file {name!r}"}, 404)
    return FileResponse(path, filename=name)
