"""The competition server: web pages and a JSON API in one ASGI app (FastAPI on uvicorn).

Scoring runs inside the request that uploads the file, on a worker thread bounded by a capacity
limiter (one per CPU): a submission is scored or refused before its response is sent, so there
is no queue for it to get stuck in. Every state the server keeps is in the database, so any
number of processes can serve one competition (PostgreSQL) and a restart loses nothing.

Layout: this module holds the Host the routes share, the middleware and create_app, which
includes two routers: kit.host.api (the JSON API, and the Host dependency and Refused exception
both routers use) and kit.host.web (the participants' and the host's pages).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kit.errors import KitError, SubmissionError
from kit.host import admin, api, auth, scoring, web
from kit.host.store import LimitReached, now_iso
from kit.metrics import get_metric

MESSAGE_MAX = 500  # characters of a submission message kept
FORM_OVERHEAD = 16 * 1024  # bytes a multipart body may add around the file itself


class Host:
    """What the routes share: the store, the folder, the cached answer key, the scoring pool."""

    def __init__(self, hostdir: Path, db: str | None = None):
        self.hostdir = Path(hostdir)
        self.store = admin.open_store(self.hostdir, db)
        values = admin.settings(self.store)  # refuse to serve an empty database
        # import the metric's code (scikit-learn) now, not inside the first upload's request
        get_metric(values["metric"]).from_labels(np.array(["0", "1"]), np.array(["0", "1"]))
        self.limiter = anyio.CapacityLimiter(os.cpu_count() or 2)
        self._key: tuple[int, scoring.AnswerKey] | None = None

    def settings(self) -> dict:
        return self.store.get_meta()

    def answer_key(self, values: dict) -> scoring.AnswerKey:
        version = values.get("answers_version", 1)
        if self._key is None or self._key[0] != version:  # rescore with a new key bumps it
            self._key = (version, scoring.AnswerKey(self.store.read_answers()))
        return self._key[1]

    def rules(self, values: dict) -> scoring.Rules:
        return scoring.Rules.from_meta(values, self.hostdir)

    # auth -------------------------------------------------------------------------------------
    def client(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def locked_out(self, request: Request) -> bool:
        since = time.time() - auth.LOGIN_WINDOW_SECONDS
        return self.store.recent_failures(self.client(request), since) >= auth.LOGIN_MAX_FAILURES

    def failed(self, request: Request) -> None:
        now = time.time()
        self.store.record_failure(self.client(request), now, now - auth.LOGIN_WINDOW_SECONDS)

    def bearer_team(self, request: Request) -> dict | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        team = self.store.team_by_token_hash(auth.hash_token(header[7:]))
        return team if team and team["role"] != "baseline" else None

    def session_team(self, request: Request, values: dict) -> dict | None:
        cookie = request.cookies.get(auth.SESSION_COOKIE)
        if not cookie:
            return None
        teams = {}

        def token_hash_of(team_id: int):
            teams[team_id] = self.store.team_by_id(team_id)
            return teams[team_id]["token_hash"] if teams[team_id] else None

        team_id = auth.session_team(values["secret"], cookie, token_hash_of)
        return teams.get(team_id) if team_id is not None else None

    # submissions ------------------------------------------------------------------------------
    def remaining(self, team: dict, values: dict) -> int:
        return max(values["daily_limit"] - self.store.used_today(team["id"]), 0)

    def submit(self, team: dict, data: bytes, file_name: str, message: str, key: str | None):
        """(status, body) of one upload: 201 scored, 400 invalid, 403 closed, 429 over limit."""
        values = self.settings()
        current = admin.state(values)
        if team["role"] != "team":
            return 403, {"error": "only participant teams submit (baselines: kit host baseline)"}
        if key:
            earlier = self.store.find_by_key(team["id"], key)
            if earlier and earlier["sha256"] != hashlib.sha256(data).hexdigest():
                return 422, {"error": "this Idempotency-Key came with another file: use a new key"}
            if earlier:  # a retry of an acknowledged upload: the same answer, nothing charged
                return 201, self._answer(earlier, team, values, replayed=True)
        if current != "open":
            if values.get("start") and now_iso() < values["start"]:
                return 403, {"error": f"submissions open at {values['start']} (UTC)"}
            return 403, {"error": f"submissions are closed: the competition is {current}"}
        limit = values["daily_limit"]
        if self.store.used_today(team["id"]) >= limit:
            return 429, self._limit_error(limit)
        try:
            scores = scoring.check_and_score(
                data, self.rules(values), self.answer_key(values), self.hostdir / "scratch"
            )
        except SubmissionError as error:
            return 400, {"error": "; ".join(error.problems), "problems": error.problems}
        row = {
            "team_id": team["id"],
            "submitted_at": now_iso(),
            "message": message[:MESSAGE_MAX],
            "file_name": Path(file_name or "submission.csv").name[:200],
            "idempotency_key": key,
            "content": data,
            **scores,
        }
        try:
            stored, created = self.store.add_submission(row, daily_limit=limit)
        except LimitReached:
            return 429, self._limit_error(limit)
        return 201, self._answer(stored, team, values, replayed=not created)

    def _answer(self, row: dict, team: dict, values: dict, *, replayed: bool) -> dict:
        return {
            "id": row["id"],
            "public_score": row["public_score"],
            "public_interval": [row["public_low"], row["public_high"]],
            "remaining_today": self.remaining(team, values),
            "metric": values["metric"],
            "submitted_at": row["submitted_at"],
            "replayed": replayed,
        }

    @staticmethod
    def _limit_error(limit: int) -> dict:
        return {"error": f"daily limit of {limit} submissions reached: try again after 00:00 UTC"}

    def leaderboard(self, values: dict, *, private: bool) -> list[dict]:
        return admin.standings(self.store, values, private=private)

    def set_finals(self, team: dict, ids: list[int]) -> tuple[int, dict]:
        """(status, body) of a team's final selections: 200 set, 400 refused, 403 revealed."""
        values = self.settings()
        if admin.state(values) == "revealed":
            return 403, {"error": "the private leaderboard is revealed: finals are fixed"}
        if len(set(ids)) > values["max_finals"]:
            return 400, {"error": f"at most {values['max_finals']} final selections"}
        try:
            self.store.set_finals(team["id"], sorted(set(ids)))
        except KitError as error:
            return 400, {"error": str(error)}
        return 200, {"finals": sorted(set(ids))}

    def public_files(self) -> dict[str, Path]:
        folder = self.hostdir / "public"
        return {p.name: p for p in folder.iterdir() if p.is_file()}


async def guard(request: Request, call_next):
    """The middleware: upload caps, the CSRF cookie and the security headers of every answer."""
    # uploads are capped before they are read: a multipart body larger than the file limit
    # plus form overhead is refused from its Content-Length
    if request.method == "POST" and request.url.path in ("/api/submissions", "/submit"):
        host: Host = request.app.state.host
        length = request.headers.get("content-length")
        values = await anyio.to_thread.run_sync(host.settings)
        cap = host.rules(values).max_bytes + FORM_OVERHEAD
        if length is None or not length.isdigit():
            return JSONResponse({"error": "send the upload with a Content-Length"}, 411)
        if int(length) > cap:
            return JSONResponse({"error": f"upload too large: at most {cap:,} bytes"}, 413)
    cookie = request.cookies.get(auth.CSRF_COOKIE)
    request.state.csrf_cookie = cookie or auth.new_csrf_cookie()
    response = await call_next(request)
    if cookie is None and not request.url.path.startswith("/api/"):
        response.set_cookie(
            auth.CSRF_COOKIE, request.state.csrf_cookie, httponly=True, samesite="strict"
        )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = "default-src 'self'; form-action 'self'"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(hostdir: Path | str | None = None, db: str | None = None) -> FastAPI:
    """The ASGI app for HOSTDIR (default $KIT_HOST_DIR, for `uvicorn --factory` workers)."""
    host = Host(Path(hostdir or os.environ["KIT_HOST_DIR"]), db or os.environ.get("KIT_HOST_DB"))
    app = FastAPI(title="kit host", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.host = host
    app.middleware("http")(guard)
    app.add_exception_handler(api.Refused, api.answer_refused)
    app.include_router(api.router)
    app.include_router(web.router)
    return app


def serve(
    hostdir: Path,
    *,
    bind: str = "127.0.0.1",
    port: int = 8800,
    db: str | None = None,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted (uvicorn; several workers share one PostgreSQL)."""
    import uvicorn

    hostdir = Path(hostdir).resolve()
    if workers > 1:
        os.environ["KIT_HOST_DIR"] = str(hostdir)
        if db:
            os.environ["KIT_HOST_DB"] = db
        uvicorn.run(
            "kit.host.app:create_app",
            factory=True,
            host=bind,
            port=port,
            workers=workers,
            log_level=log_level,
        )
    else:
        uvicorn.run(create_app(hostdir, db), host=bind, port=port, log_level=log_level)
