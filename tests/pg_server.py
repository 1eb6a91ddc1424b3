"""A real PostgreSQL server for tests: initdb + pg_ctl in a temp folder, as the unprivileged
`postgres` user (PostgreSQL refuses to run as root), on 127.0.0.1 and a free port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from host_server import free_port

START_TIMEOUT_S = 60


def pg_bin() -> Path | None:
    """Debian's newest PostgreSQL bin folder, or None when the server is not installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self, user: str = "postgres"):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.run_as = user if os.geteuid() == 0 else None
        # not under pytest's tmp_path: its parents are private to root, and the server is not root
        self.folder = Path(tempfile.mkdtemp(prefix="kit-pg-"))
        if self.run_as:
            entry = pwd.getpwnam(user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.data = self.folder / "data"
        self.port = free_port()
        self._run(["initdb", "-D", str(self.data), "-U", "kit", "-A", "trust", "--no-sync",
                   "-E", "UTF8"])  # fmt: skip
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")  # fmt: skip
        self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                   "-w", "-t", str(START_TIMEOUT_S), "start"])  # fmt: skip
        self.url = f"postgresql://kit@127.0.0.1:{self.port}/postgres"

    def _run(self, command: list[str]) -> None:
        command[0] = str(self.bin / command[0])
        subprocess.run(command, check=True, capture_output=True, timeout=START_TIMEOUT_S,
                       user=self.run_as, cwd=self.folder)  # fmt: skip

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
