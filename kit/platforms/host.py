"""The participant's side of a `kit host` competition: the JSON API over stdlib urllib.

A folder with `[competition] platform = "host"` and `host_url` talks to the server through
HostClient; the token comes from $KIT_HOST_TOKEN or from `kit login URL`, which keeps it in
$KIT_HOME/host-tokens.json (0600). Uploads carry an Idempotency-Key, so a retry after a dropped
connection is never counted twice.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd

from kit.errors import ConfigError, KitError, LimitError, SubmissionError
from kit.fileio import atomic_open, kit_home, write_json
from kit.platforms import downloaded
from kit.platforms.archive import safe_extract

TOKENS_NAME = "host-tokens.json"  # in KIT_HOME, mode 0600: {server URL: token}
STAMP_NAME = ".kit-host.json"  # in data/: the bundle that was extracted there (skip if current)
TIMEOUT_S = 60  # per request; scoring happens inside the upload request
RETRY_DELAYS = (0.5, 1.0, 2.0)
CHUNK_BYTES = (
    1 << 20
)  # download copy size  # seconds between retries of a request that did not get an answer


def _base(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"host URL {url!r} must start with http:// or https://")
    return url


def tokens_path() -> Path:
    return kit_home() / TOKENS_NAME


def saved_token(url: str) -> str | None:
    if os.environ.get("KIT_HOST_TOKEN"):
        return os.environ["KIT_HOST_TOKEN"].strip()
    path = tokens_path()
    return json.loads(path.read_text()).get(_base(url)) if path.exists() else None


def login(url: str, token: str) -> dict:
    """Check token against the server, then keep it for that URL (KIT_HOME, mode 0600)."""
    client = HostClient(url, token=token.strip())
    me = client.me()
    path = tokens_path()
    tokens = json.loads(path.read_text()) if path.exists() else {}
    tokens[client.url] = token.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        os.chmod(handle.name, 0o600)
        handle.write(json.dumps(tokens, indent=2) + "\n")
    return me


class HostClient:
    """download, submit, submissions, leaderboard, finals and list_files against one server."""

    def __init__(self, url: str, token: str | None = None):
        self.url = _base(url)
        self.token = token or saved_token(self.url)

    @classmethod
    def for_competition(cls, competition) -> HostClient:
        url = competition.config.competition.host_url
        if not url:
            raise ConfigError('competition.host_url is empty: set it to the host\'s "http://..."')
        return cls(url)

    # transport --------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict | None = None,
        auth: bool = True,
        sink=None,
    ):
        """The JSON answer; with sink (a binary file), the body is copied into it in chunks."""
        headers = dict(headers or {})
        if auth:
            if not self.token:
                raise KitError(f"no token for {self.url}: run `kit login {self.url}`")
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    if sink is not None:
                        sink.seek(0)
                        sink.truncate()  # a retry starts the file again
                        shutil.copyfileobj(response, sink, CHUNK_BYTES)
                        return None
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code >= 500 and delay is not None:
                    time.sleep(delay)
                    continue
                self._raise(error)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if delay is None:
                    reason = getattr(error, "reason", error)
                    raise KitError(
                        f"cannot reach {self.url} ({reason}) after {attempt + 1} tries: "
                        "check competition.host_url and that the host is serving"
                    ) from None
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _raise(self, error: urllib.error.HTTPError):
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            body = {}
        text = body.get("error") or error.reason
        if error.code == 401:
            raise KitError(f"{self.url} refused the token ({text}): run `kit login {self.url}`")
        if error.code == 429:
            raise LimitError(f"{self.url}: {text}")
        if error.code == 400 and body.get("problems"):
            raise SubmissionError("submission", body["problems"])
        raise KitError(f"{self.url} answered {error.code}: {text}")

    # API --------------------------------------------------------------------------------------
    def competition(self) -> dict:
        return self._request("GET", "/api/competition", auth=False)

    def me(self) -> dict:
        return self._request("GET", "/api/me")

    def list_files(self) -> list[dict]:
        return self._request("GET", "/api/files")

    def download(self, dest: Path, *, force: bool = False) -> list[Path]:
        """Fetch the data bundle into dest (safely extracted); [] when dest already holds it."""
        dest = Path(dest)
        bundle = next((f for f in self.list_files() if f["name"].endswith(".zip")), None)
        if bundle is None:
            raise KitError(f"{self.url} publishes no data bundle: ask the host to `kit host init`")
        stamp = dest / STAMP_NAME
        if not force and stamp.exists() and json.loads(stamp.read_text()) == bundle:
            return []
        dest.parent.mkdir(parents=True, exist_ok=True)
        archive = dest.parent / f".{bundle['name']}.download"
        with atomic_open(archive, "wb") as handle:  # streamed: a bundle may be gigabytes
            self._request("GET", f"/api/files/{bundle['name']}", sink=handle)
        try:
            files = safe_extract(archive, dest)
        finally:
            archive.unlink(missing_ok=True)
        write_json(stamp, bundle)
        return files

    def submit(self, file: Path, message: str, *, idempotency_key: str | None = None) -> dict:
        """Upload a CSV; the server scores it before answering {id, public_score, ...}."""
        file = Path(file)
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\n'.encode()
            + message.encode()
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{file.name}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
            + file.read_bytes()
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            # one key for every retry of this upload: the server stores it once
            "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
        }
        result = self._request("POST", "/api/submissions", body=b"".join(parts), headers=headers)
        return {**result, "ref": result["id"], "status": "complete"}

    def submissions(self) -> list[dict]:
        return self._request("GET", "/api/submissions")

    def leaderboard(self) -> list[dict]:
        return self._request("GET", "/api/leaderboard", auth=False)["rows"]

    def leaderboard_with_you(self) -> list[dict]:
        """The board with a `you` column marking your team's row (when logged in)."""
        rows = self.leaderboard()
        team = self.me()["team"] if self.token else None
        return [{**row, "you": row["team"] == team} for row in rows]

    def finals(self, ids: list[int]) -> list[int]:
        body = json.dumps({"ids": [int(i) for i in ids]}).encode()
        result = self._request(
            "POST", "/api/finals", body=body, headers={"Content-Type": "application/json"}
        )
        return result["finals"]


class HostPlatform:
    """A `kit host` competition (kit.platforms.Platform): the participant's side of its API."""

    counts_after_record = False  # the server has counted it before kit records it

    def __init__(self, competition):
        self.competition = competition
        self.client = HostClient.for_competition(competition)

    def download(self, *, force: bool, limit: int | None, progress: bool, replace_key: bool):
        # the participant bundle; the server never serves the answer key
        dest = self.competition.data_dir
        files = self.client.download(dest, force=force)
        return downloaded(f"host:{self.competition.config.competition.host_url}", dest, files)

    def list_files(self) -> list[dict]:
        return self.client.list_files()

    def submit(self, file: Path, message: str, *, wait: bool, record) -> dict:
        result = self.client.submit(file, message)  # scored inside the request: nothing to wait
        record(result)
        return result

    def submit_kernel(self, kernel, version, message, *, output, wait) -> dict:
        raise ConfigError('--kernel submits a Kaggle notebook: set competition.platform = "kaggle"')

    def submissions(self):
        return pd.DataFrame(self.client.submissions())

    def leaderboard(self, *, private: bool, top: int):

        # private columns come only after the host's reveal, whatever the caller asks
        return pd.DataFrame(self.client.leaderboard_with_you())
