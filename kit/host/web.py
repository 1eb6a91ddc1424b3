"""The server-rendered pages: participants' (session cookie + CSRF-checked forms) and the host's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from kit.host import admin, auth, bootstrap, pages
from kit.host.api import HostDep, Refused

if TYPE_CHECKING:
    from starlette.datastructures import FormData

    from kit.host.app import Host

router = APIRouter()


# ---------------------------------------------------------------------------------- helpers --
def csrf(request: Request, values: dict) -> str:
    # derived from the browser's csrf cookie (set by the middleware), so every form works
    return auth.csrf_token(values["secret"], request.state.csrf_cookie)


def page(request: Request, title: str, body: str, active: str, team, values, status=200):
    html = pages.layout(
        title, body, name=values["title"], active=active, team=team, csrf=csrf(request, values)
    )
    return HTMLResponse(html, status)


async def checked_form(request: Request, values: dict) -> FormData | None:
    """The posted form, or None when its CSRF token does not match the browser's cookie."""
    form = await request.form(max_files=1, max_fields=8)
    if not auth.csrf_ok(values["secret"], request.cookies.get(auth.CSRF_COOKIE), form.get("csrf")):
        return None
    return form


def markdown_page(host: Host, name: str) -> str:
    path = host.hostdir / "pages" / f"{name}.md"
    return pages.markdown(path.read_text()) if path.exists() else ""


def markdown_with_state(request: Request, host: Host, title: str, name: str) -> HTMLResponse:
    """The page of the host's pages/NAME.md, under the competition's state line."""
    values, team = who(host, request)
    body = pages.state_line(admin.state(values), values) + markdown_page(host, name)
    return page(request, title, body, name, team, values)


def who(host: Host, request: Request) -> tuple[dict, dict | None]:
    """The settings and the session's team (None when nobody is logged in)."""
    values = host.settings()
    return values, host.session_team(request, values)


def signed_in(host: Host, request: Request, *, role: str = "") -> tuple[dict, dict]:
    """who(), refusing with a redirect to the login page when nobody (of that role) is logged in."""
    values, team = who(host, request)
    if team is None or (role and team["role"] != role):
        raise Refused(RedirectResponse("/login", 303))
    return values, team


def host_only(host: Host, request: Request) -> tuple[dict, dict]:
    return signed_in(host, request, role="host")


async def signed_in_form(host: Host, request: Request, guard=signed_in):
    """(settings, team, form) of a form posted by a logged-in browser (guard refuses anyone
    else); the form is None when its CSRF token does not match."""
    values, team = await anyio.to_thread.run_sync(guard, host, request)
    return values, team, await checked_form(request, values)


def submit_body(host: Host, request: Request, team: dict, values: dict, problems=()) -> str:
    return pages.submit(
        csrf(request, values),
        remaining=host.remaining(team, values),
        daily_limit=values["daily_limit"],
        state=admin.state(values),
        problems=problems,
    )


# -------------------------------------------------------------------------------- pages --
@router.get("/static/kit.css")
def style():
    return Response(pages.STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, host: HostDep):
    return markdown_with_state(request, host, "Overview", "overview")


@router.get("/data", response_class=HTMLResponse)
def data(request: Request, host: HostDep):
    values, team = who(host, request)
    if team:
        links = "".join(
            f"<li><a href='/files/{n}'>{n}</a> ({p.stat().st_size:,} bytes)</li>"
            for n, p in sorted(host.public_files().items())
        )
        files = f"<h2>Download</h2><ul>{links}</ul>"
    else:
        files = "<p><a href=/login>Log in</a> to download the data.</p>"
    return page(request, "Data", markdown_page(host, "data") + files, "data", team, values)


@router.get("/files/{name}")
def file(name: str, request: Request, host: HostDep):
    signed_in(host, request)
    path = host.public_files().get(name)
    if path is None:
        return PlainTextResponse("not found", 404)
    return FileResponse(path, filename=name)


@router.get("/rules", response_class=HTMLResponse)
def rules(request: Request, host: HostDep):
    return markdown_with_state(request, host, "Rules", "rules")


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(request: Request, host: HostDep, view: str = ""):
    values, team = who(host, request)
    current = admin.state(values)
    # the host may preview the private board before the reveal; nobody else can
    revealed = current == "revealed" or (view == "private" and team and team["role"] == "host")
    rows = host.leaderboard(values, private=bool(revealed))
    noise = None
    if revealed:
        ranked = [r for r in rows if not r["baseline"] and r["public_low"] is not None]
        noise = {
            "teams": len(ranked),
            "moved": sum(1 for r in ranked if r.get("rank_change")),
            "undetermined": bootstrap.undetermined_ranks(ranked),
        }
    body = pages.state_line(current, values) + pages.leaderboard(
        rows, revealed=bool(revealed), settings=values, team=team, noise=noise
    )
    return page(request, "Leaderboard", body, "leaderboard", team, values)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, host: HostDep):
    values, team = who(host, request)
    return page(request, "Log in", pages.login(csrf(request, values)), "login", team, values)


@router.post("/login")
async def login(request: Request, host: HostDep):
    values = await anyio.to_thread.run_sync(host.settings)
    if await anyio.to_thread.run_sync(host.locked_out, request):
        body = pages.login(csrf(request, values), "Too many failed logins: wait a few minutes.")
        return page(request, "Log in", body, "login", None, values, 429)
    form = await checked_form(request, values)
    if form is None:
        body = pages.login(csrf(request, values), "The form expired: please try again.")
        return page(request, "Log in", body, "login", None, values, 403)
    token = str(form.get("token") or "")
    team = await anyio.to_thread.run_sync(host.store.team_by_token_hash, auth.hash_token(token))
    if team is None or team["role"] == "baseline":
        await anyio.to_thread.run_sync(host.failed, request)
        body = pages.login(csrf(request, values), "That token is not valid.")
        return page(request, "Log in", body, "login", None, values, 401)
    response = RedirectResponse("/host" if team["role"] == "host" else "/submissions", 303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        auth.session_value(values["secret"], team["id"], team["token_hash"]),
        max_age=auth.SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, host: HostDep):
    values = await anyio.to_thread.run_sync(host.settings)
    if await checked_form(request, values) is None:
        return PlainTextResponse("form expired", 403)
    response = RedirectResponse("/", 303)
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request, host: HostDep):
    values, team = signed_in(host, request)
    body = submit_body(host, request, team, values)
    return page(request, "Submit", body, "submit", team, values)


@router.post("/submit")
async def submit_form(request: Request, host: HostDep):
    values, team, form = await signed_in_form(host, request)
    if form is None:
        return page(
            request,
            "Submit",
            pages.message("Submit", "The form expired: reload it."),
            "submit",
            team,
            values,
            403,
        )
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        status, body = 400, {"error": "choose a CSV file", "problems": ["choose a CSV file"]}
    else:
        data = await upload.read()
        status, body = await anyio.to_thread.run_sync(
            host.submit,
            team,
            data,
            upload.filename,
            str(form.get("message") or ""),
            None,
            limiter=host.limiter,
        )
    if status == 201:
        return RedirectResponse(f"/submissions?new={body['id']}", 303)
    problems = body.get("problems") or [body["error"]]
    html = submit_body(host, request, team, values, problems)
    return page(request, "Submit", html, "submit", team, values, status)


@router.get("/submissions", response_class=HTMLResponse)
def submissions_page(request: Request, host: HostDep, new: int | None = None):
    values, team = signed_in(host, request)
    current = admin.state(values)
    revealed = current == "revealed"
    rows = host.store.team_submissions(team["id"], private=revealed)
    body = pages.my_submissions(
        rows,
        csrf=csrf(request, values),
        remaining=host.remaining(team, values),
        settings=values,
        revealed=revealed,
        new_id=new,
        state=current,
    )
    return page(request, "My submissions", body, "submissions", team, values)


@router.post("/finals")
async def finals_form(request: Request, host: HostDep):
    values, team, form = await signed_in_form(host, request)
    if form is None:
        return PlainTextResponse("form expired", 403)
    try:
        ids = [int(i) for i in form.getlist("ids")]
    except ValueError:
        status, body = 400, {"error": "bad ids"}
    else:
        status, body = await anyio.to_thread.run_sync(host.set_finals, team, ids)
    if status != 200:
        return page(
            request,
            "My submissions",
            pages.message("Finals", body["error"]),
            "submissions",
            team,
            values,
            status,
        )
    return RedirectResponse("/submissions", 303)


# --------------------------------------------------------------------------- host pages --
@router.get("/host", response_class=HTMLResponse)
def host_page(request: Request, host: HostDep):
    values, team = host_only(host, request)
    teams = [t for t in host.store.list_teams() if t["role"] == "team"]
    counts = {"teams": len(teams), "submissions": sum(t["entries"] for t in teams)}
    body = pages.host_home(admin.state(values), values, csrf(request, values), counts)
    return page(request, "Host", body, "host", team, values)


@router.post("/host/state")
async def host_state(request: Request, host: HostDep):
    values, team, form = await signed_in_form(host, request, host_only)
    if form is None or form.get("state") not in admin.STATES:
        return PlainTextResponse("form expired or bad state", 403)
    await anyio.to_thread.run_sync(host.store.set_meta, {"state": form.get("state")})
    return RedirectResponse("/host", 303)


@router.get("/host/teams", response_class=HTMLResponse)
def host_teams(request: Request, host: HostDep):
    values, team = host_only(host, request)
    return page(request, "Teams", pages.host_teams(host.store.list_teams()), "host", team, values)


@router.get("/host/submissions", response_class=HTMLResponse)
def host_submissions(request: Request, host: HostDep):
    values, team = host_only(host, request)
    body = pages.host_submissions(host.store.all_submissions())
    return page(request, "Submissions", body, "host", team, values)


@router.get("/host/export.csv")
def host_export(request: Request, host: HostDep):
    host_only(host, request)
    text = admin.standings_frame(host.store).to_csv(index=False)
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": "attachment; filename=standings.csv"},
    )
