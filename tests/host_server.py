"""Test helpers for kit host: a digits competition hosted in a folder, and a real uvicorn server
process on 127.0.0.1 (a free port), started through the real CLI and stopped for sure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

STARTUP_TIMEOUT_S = 60  # a cold start imports pandas, sklearn and fastapi on a busy 2-core box


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hosted_digits(folder: Path, *, limit: int = 200, db: str | None = None, **init) -> dict:
    """A digits competition under folder/competitions, hosted in folder/host; KIT_HOME must be
    set by the caller. Returns hostdir, competition root and the host token."""
    from kit.data.download import download
    from kit.host.admin import init_host
    from kit.scaffold import new_competition

    competition = new_competition("digits", folder / "competitions", example="digits")
    download(competition, limit=limit, progress=False)
    result = init_host(folder / "host", competition.root, db=db, **init)
    return {"hostdir": folder / "host", "root": competition.root, "host_token": result["host_token"],
            "competition": competition}  # fmt: skip


class Server:
    """`kit host serve HOSTDIR` as a child process; stop() or kill() ends it."""

    def __init__(self, hostdir: Path, env: dict, *, db: str | None = None, workers: int = 1,
                 log: Path | None = None):  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "kit", "host", "serve", str(hostdir), "--port",
                   str(self.port), "--workers", str(workers)]  # fmt: skip
        if db:
            command += ["--db", db]
        self.log_path = log or Path(hostdir) / f"server-{self.port}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop or kill)
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/api/competition", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"server not ready in {STARTUP_TIMEOUT_S} s: {self.log_path.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        """kill -9 the whole process group (uvicorn workers too)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def request(url: str, method: str = "GET", *, token: str | None = None, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:  # fmt: skip
    """(status, headers, body) of one real HTTP request; HTTP errors are returned, not raised."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def multipart(data: bytes, message: str = "", name: str = "submission.csv") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\n{message}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(url: str, token: str, data: bytes, *, message: str = "", key: str | None = None,
           timeout: float = 60) -> tuple[int, dict]:  # fmt: skip
    body, content_type = multipart(data, message)
    headers = {"Content-Type": content_type}
    if key:
        headers["Idempotency-Key"] = key
    status, _, raw = request(url + "/api/submissions", "POST", token=token, body=body,
                             headers=headers, timeout=timeout)  # fmt: skip
    return status, json.loads(raw or b"{}")


def prediction(sample_path: Path, labels) -> bytes:
    """A submission CSV: sample_submission's ids with the given labels (a list, or one label)."""
    import pandas as pd

    sample = pd.read_csv(sample_path, dtype=str)
    sample[sample.columns[1]] = labels
    return sample.to_csv(index=False).encode()
