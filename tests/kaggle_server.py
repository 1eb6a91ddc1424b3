"""A loopback stand-in for Kaggle that the real `kaggle` client talks to in tests.

How the real client gets here (kaggle 2.2.5, kagglesdk 0.1.38): with
`KAGGLE_API_ENVIRONMENT=LOCALHOST` every call is `POST http://localhost/api/v1/{Service}/{Method}`
with a camelCase JSON body, and `requests` sends any `http://` URL through the proxy named by
`HTTP_PROXY`/`http_proxy`. This server *is* that proxy: it answers requests in absolute form
(`POST http://localhost/api/v1/...`), so it also serves the hosts the API redirects to, like the
storage host that holds data archives and takes submission uploads. `HTTPS_PROXY` points here
too, and every `CONNECT` is refused and logged, so a test that would reach the internet fails
instead. Speaks just enough of the protocol for kit.platforms.kaggle, with faults to order.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import select
import socket
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

API_HOST = "localhost"  # what KaggleEnv.LOCAL calls
STORAGE_HOST = "storage.kit.test"  # .test never resolves, so a leak past the proxy cannot go far
COMPETITIONS_SERVICE = "competitions.CompetitionApiService"
# The services this server answers, and the methods that need no competition in their body.
SERVICES = {
    COMPETITIONS_SERVICE,
    "datasets.DatasetApiService",
    "blobs.BlobApiService",
    "kernels.KernelsApiService",
}
NO_COMPETITION = {
    "GetSubmission",
    "GetDatasetStatus",
    "StartBlobUpload",
    "CreateDataset",
    "CreateDatasetVersion",
    "SaveKernel",
}


def make_zip(members: dict[str, bytes]) -> bytes:
    """A deflated zip of name -> content, deterministic (fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 5)), content)
    return buffer.getvalue()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


@dataclass
class Competition:
    """One competition's data and state on the server."""

    slug: str
    files: dict[str, bytes]
    title: str = "Test Competition"
    rules_accepted: bool = True  # False: data and submission calls answer 403, like Kaggle
    updated: datetime = field(default_factory=lambda: datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    archive: bytes | None = None  # the zip served; built from files unless set (e.g. a hostile one)
    leaderboard: list[dict] = field(default_factory=list)  # teamId, teamName, score, submissionDate
    _zip_cache: tuple = (None, b"")

    def data_zip(self) -> bytes:
        if self.archive is not None:
            return self.archive
        key = (tuple((name, id(content)) for name, content in sorted(self.files.items())),)
        if self._zip_cache[0] != key:  # zipping megabytes on every header would slow tests
            self._zip_cache = (key, make_zip(self.files))
        return self._zip_cache[1]

    def etag(self) -> str:
        return f'"{self.slug}-{int(self.updated.timestamp())}-{len(self.data_zip())}"'

    def last_modified(self) -> str:
        return email.utils.formatdate(self.updated.timestamp(), usegmt=True)


@dataclass
class Logged:
    """One request as the server saw it."""

    method: str
    host: str
    path: str
    absolute_form: bool  # True when it arrived through the proxy, as an absolute URI
    headers: dict[str, str]
    body: bytes


class KaggleServer:
    """The server's state, faults and lifecycle: start() it, stop() it at the end."""

    def __init__(self, username: str = "kit-user", key: str = "kit-test-key"):
        self.username, self.key = username, key
        self.team_name = "Kit Team"
        self.competitions: dict[str, Competition] = {}
        self.submissions: list[dict] = []
        self.uploads: dict[str, bytes] = {}
        self.upload_names: dict[str, str] = {}
        self.public_score = "0.87500"
        self.scored_after_polls = 1  # ListSubmissions calls before a new submission is scored
        # Faults: statuses answered, in order, before a method works again ("*" = any method).
        self.rpc_faults: dict[str, list[int]] = {}
        self.cut_after_bytes: int | None = None  # close a download's connection after N bytes...
        self.cuts_left = 0  # ...this many times
        self.reject_uploads = False  # the storage host answers PUTs with 403, as GCS does
        self.abort_grace_seconds = 0.15  # how long a body waits to see if the client hung up
        # Observations for assertions.
        self.log: list[Logged] = []
        self.rpc_calls: Counter[str] = Counter()
        self.bodies_served = 0  # data archive bodies the server sent, whole or in part
        self.bodies_skipped = 0  # archive GETs the client hung up on before any body byte
        self.ranges: list[str] = []  # Range headers of archive GETs
        self.connects: list[str] = []  # CONNECT attempts (https); tests expect none
        # Datasets and kernels: ref "owner/slug" -> its versions, oldest first.
        self.datasets: dict[str, list[dict]] = {}  # each: notes, files (name -> bytes), meta
        self.kernels: dict[str, list[dict]] = {}  # each: the SaveKernel body
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> KaggleServer:
        server_state = self

        class Handler(_Handler):
            state = server_state

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval makes stop() quick; the default would add 0.5 s to every test.
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ---------------------------------------------------------------- setup helpers
    def add_competition(self, slug: str, files: dict[str, bytes], **fields) -> Competition:
        competition = Competition(slug, files, **fields)
        self.competitions[slug] = competition
        return competition

    def fail(self, method: str, *statuses: int) -> None:
        """Answer the next calls of method ("*": any) with these HTTP statuses, in order."""
        self.rpc_faults.setdefault(method, []).extend(statuses)

    def requests_to(self, host: str) -> list[Logged]:
        return [entry for entry in self.log if entry.host == host]

    # ---------------------------------------------------------------- API methods
    def rpc(self, method: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        """Answer one API call: (status, JSON body, extra headers)."""
        with self._lock:
            self.rpc_calls[method] += 1
            for key in (method, "*"):
                if self.rpc_faults.get(key):
                    status = self.rpc_faults[key].pop(0)
                    return status, {"code": status, "message": f"injected HTTP {status}"}, {}
            handler = getattr(self, f"_rpc_{method}", None)
            if handler is None:
                return 404, {"code": 404, "message": f"no method {method} on this server"}, {}
            competition = self.competitions.get(body.get("competitionName", ""))
            if competition is None and method not in NO_COMPETITION:
                return 404, {"code": 404, "message": "Competition not found"}, {}
            return handler(competition, body)

    def _rpc_ListDataFiles(self, competition: Competition, body: dict):
        names = sorted(competition.files)
        page, token = _page(names, body)
        files = [
            {
                "name": name,
                "totalBytes": len(competition.files[name]),
                "creationDate": _iso(competition.updated),
            }
            for name in page
        ]
        return 200, {"files": files, "nextPageToken": token}, {}

    def _rpc_DownloadDataFiles(self, competition: Competition, body: dict):
        if not competition.rules_accepted:
            return 403, {"code": 403, "message": "You must accept this competition's rules"}, {}
        location = (
            f"http://{STORAGE_HOST}/competitions/{competition.slug}/{competition.slug}.zip"
            "?X-Goog-Signature=signed-by-test-server"
        )
        return 302, {}, {"Location": location}

    def _rpc_StartSubmissionUpload(self, competition: Competition, body: dict):
        if not competition.rules_accepted:
            return 403, {"code": 403, "message": "You must accept this competition's rules"}, {}
        token = f"upload-{len(self.uploads) + 1}"
        self.uploads[token] = b""  # reserved; the PUT fills it
        self.upload_names[token] = body.get("fileName", "")
        return 200, {"token": token, "createUrl": f"http://{STORAGE_HOST}/upload/{token}"}, {}

    def _rpc_CreateSubmission(self, competition: Competition, body: dict):
        token = body.get("blobFileTokens", "")
        if not self.uploads.get(token):
            return 400, {"code": 400, "message": "No uploaded file for this token"}, {}
        ref = 1000 + len(self.submissions)
        self.submissions.append(
            {
                "competition": competition.slug,
                "ref": ref,
                "date": _iso(datetime.now(UTC)),
                "description": body.get("submissionDescription", ""),
                "fileName": self.upload_names.get(token, ""),
                "content": self.uploads[token],
                "polls": 0,
            }
        )
        return 200, {"message": f"Successfully submitted to {competition.title}", "ref": ref}, {}

    def _submission_json(self, submission: dict) -> dict:
        scored = submission["polls"] >= self.scored_after_polls
        answer = {
            "ref": submission["ref"],
            "date": submission["date"],
            "description": submission["description"],
            "fileName": submission["fileName"],
            "status": "COMPLETE" if scored else "PENDING",
            "teamName": self.team_name,
            "submittedBy": self.username,
            "totalBytes": len(submission["content"]),
        }
        if scored:
            answer["publicScore"] = self.public_score
        return answer

    def _rpc_ListSubmissions(self, competition: Competition, body: dict):
        own = [s for s in reversed(self.submissions) if s["competition"] == competition.slug]
        for submission in own:
            submission["polls"] += 1
        page, token = _page(own, body)
        return (
            200,
            {"submissions": [self._submission_json(s) for s in page], "nextPageToken": token},
            {},
        )

    def _rpc_GetLeaderboard(self, competition: Competition, body: dict):
        page, token = _page(competition.leaderboard, body)
        return 200, {"submissions": page, "nextPageToken": token}, {}

    def _rpc_CreateCodeSubmission(self, competition: Competition, body: dict):
        ref = f"{body.get('kernelOwner', '')}/{body.get('kernelSlug', '')}"
        versions = self.kernels.get(ref, [])
        wanted = body.get("kernelVersion") or len(versions)
        if not versions or not 1 <= int(wanted) <= len(versions):
            # Kaggle answers 200 with a message and no ref: the failure is in the message.
            return 200, {"message": f"Kernel {ref} version {wanted} not found", "ref": 0}, {}
        ref_number = 1000 + len(self.submissions)
        self.submissions.append(
            {
                "competition": competition.slug,
                "ref": ref_number,
                "date": _iso(datetime.now(UTC)),
                "description": body.get("submissionDescription", ""),
                "fileName": body.get("fileName", ""),
                "content": f"{ref}@{wanted}".encode(),
                "polls": 0,
                "kernel": ref,
                "kernel_version": int(wanted),
            }
        )
        return 200, {"message": "Your submission was queued", "ref": ref_number}, {}

    # ---------------------------------------------------------------- datasets and kernels
    def _rpc_StartBlobUpload(self, competition, body: dict):
        token = f"blob-{len(self.uploads) + 1}"
        self.uploads[token] = b""
        self.upload_names[token] = body.get("name", "")
        return 200, {"token": token, "createUrl": f"http://{STORAGE_HOST}/upload/{token}"}, {}

    def _uploaded_files(self, files: list[dict]) -> dict[str, bytes] | None:
        tokens = [f.get("token", "") for f in files]
        if not all(self.uploads.get(token) is not None for token in tokens):
            return None
        return {self.upload_names[token]: self.uploads[token] for token in tokens}

    def _rpc_GetDatasetStatus(self, competition, body: dict):
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
        return 200, {"status": "READY"}, {}

    def _rpc_CreateDataset(self, competition, body: dict):
        ref = f"{body.get('ownerSlug', '')}/{body.get('slug', '')}"
        if body.get("ownerSlug") != self.username:
            return 403, {"code": 403, "message": "You cannot create datasets for others"}, {}
        files = self._uploaded_files(body.get("files") or [])
        if files is None:
            return 400, {"code": 400, "message": "No uploaded file for a token"}, {}
        if ref in self.datasets:
            return 200, {"error": f"The slug {ref} is already in use"}, {}
        self.datasets[ref] = [{"notes": "", "files": files, "meta": body}]
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}"}, {}

    def _rpc_CreateDatasetVersion(self, competition, body: dict):
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
        request = body.get("body") or {}
        files = self._uploaded_files(request.get("files") or [])
        if files is None:
            return 400, {"code": 400, "message": "No uploaded file for a token"}, {}
        self.datasets[ref].append(
            {"notes": request.get("versionNotes", ""), "files": files, "meta": body}
        )
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}"}, {}

    def _rpc_SaveKernel(self, competition, body: dict):
        ref = body.get("slug") or ""
        missing = [d for d in body.get("datasetDataSources") or [] if d not in self.datasets]
        absent = [c for c in body.get("competitionDataSources") or [] if c not in self.competitions]
        if missing or absent:
            # Kaggle saves the kernel but lists the sources it could not attach.
            return (
                200,
                {"ref": ref, "invalidDatasetSources": missing, "invalidCompetitionSources": absent},
                {},
            )
        if ref.split("/")[0] != self.username:
            return 200, {"error": f"You cannot push to {ref}"}, {}
        self.kernels.setdefault(ref, []).append(body)
        version = len(self.kernels[ref])
        url = f"https://www.kaggle.com/code/{ref}"
        return 200, {"ref": f"/code/{ref}", "url": url, "versionNumber": version}, {}

    # ---------------------------------------------------------------- storage host
    def take_upload(self, token: str, content: bytes) -> int:
        with self._lock:
            if self.reject_uploads or token not in self.uploads:
                return 403
            self.uploads[token] = content
            return 200


def _page(items: list, body: dict) -> tuple[list, str]:
    """A page of items per the request's pageSize/pageToken (an offset, as text)."""
    start = int(body.get("pageToken") or 0)
    size = int(body.get("pageSize") or 20)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests expects from a proxy
    state: KaggleServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # keep test output clean

    # ------------------------------------------------------------ plumbing
    def _target(self) -> tuple[str, str, str, bool]:
        parts = urlsplit(self.path)
        absolute = bool(parts.scheme)
        host = (parts.hostname if absolute else self.headers.get("Host", "")).split(":")[0]
        return host, parts.path, parts.query, absolute

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self) -> tuple[str, str, bytes]:
        host, path, _, absolute = self._target()
        body = self._read_body()
        entry = Logged(self.command, host, path, absolute, dict(self.headers.items()), body)
        with self.state._lock:
            self.state.log.append(entry)
        return host, path, body

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None):
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, json.dumps(payload).encode(), headers)

    def _authorised(self) -> bool:
        expected = base64.b64encode(f"{self.state.username}:{self.state.key}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    # ------------------------------------------------------------ verbs
    def do_CONNECT(self):  # noqa: N802 - http.server's naming
        with self.state._lock:
            self.state.connects.append(self.path)
        self._send(403, b"no internet in tests")
        self.close_connection = True

    def do_POST(self):  # noqa: N802
        host, path, body = self._record()
        prefix = "/api/v1/"
        if host != API_HOST or not path.startswith(prefix):
            return self._send_json(404, {"code": 404, "message": f"nothing at {host}{path}"})
        service, _, method = path[len(prefix) :].partition("/")
        if service not in SERVICES:
            return self._send_json(404, {"code": 404, "message": f"unknown service {service}"})
        if not self._authorised():
            return self._send_json(401, {"code": 401, "message": "Unauthenticated"})
        status, payload, headers = self.state.rpc(method, json.loads(body or b"{}"))
        if status == 302:
            return self._send(302, b"", headers)
        self._send_json(status, payload, headers)

    def do_PUT(self):  # noqa: N802
        host, path, body = self._record()
        token = path.rsplit("/", 1)[-1]
        if host != STORAGE_HOST or not path.startswith("/upload/"):
            return self._send(404, b"not found")
        status = self.state.take_upload(token, body)
        error = b"<Error><Code>AccessDenied</Code></Error>"
        self._send(status, b"" if status == 200 else error, {"Content-Type": "application/xml"})

    def do_GET(self):  # noqa: N802
        host, path, _ = self._record()
        parts = path.strip("/").split("/")
        competition = self.state.competitions.get(parts[1]) if len(parts) == 3 else None
        if host != STORAGE_HOST or parts[0] != "competitions" or competition is None:
            return self._send(404, b"not found")
        self._send_archive(competition)

    def _send_archive(self, competition: Competition):
        data = competition.data_zip()
        state = self.state
        start = 0
        wanted = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if wanted:
            with state._lock:
                state.ranges.append(wanted)
        same_object = if_range in (None, competition.etag(), competition.last_modified())
        if wanted.startswith("bytes=") and same_object:
            start = int(wanted[len("bytes=") :].split("-")[0])
        headers = {
            "Content-Type": "application/zip",
            "Last-Modified": competition.last_modified(),
            "ETag": competition.etag(),
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(data) - start),
        }
        self.send_response(206 if start else 200)
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        if self._client_hung_up():
            with state._lock:
                state.bodies_skipped += 1
            self.close_connection = True
            return
        body = data[start:]
        with state._lock:
            state.bodies_served += 1
            cut = state.cut_after_bytes if state.cuts_left > 0 else None
            if cut is not None:
                state.cuts_left -= 1
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _client_hung_up(self) -> bool:
        """True when the client closed the connection after reading only the headers.

        A client that just compares Last-Modified and size closes a streamed response at once;
        one that downloads waits for the body. Waiting a moment tells the two apart, which
        lets tests count real downloads rather than header checks.
        """
        readable, _, _ = select.select([self.connection], [], [], self.state.abort_grace_seconds)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def route_client_to(server: KaggleServer, monkeypatch, home: Path) -> None:
    """Point the real kaggle client at server: fake credentials, loopback proxy, private HOME.

    Every KAGGLE_* variable of the surrounding shell is dropped first, so a developer's real
    key can neither be used nor leak into a test.
    """
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower() in {
            "no_proxy",
            "all_proxy",
            "request_method",  # urllib ignores HTTP_PROXY when this CGI variable is set
            "verbose",
            "verbose_output",
        }:
            monkeypatch.delenv(name, raising=False)
    config_dir = home / ".kaggle"
    config_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("KAGGLE_USERNAME", server.username)
    monkeypatch.setenv("KAGGLE_KEY", server.key)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, server.url)
