"""Writing artefacts so that a crash never leaves half a file: write beside, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside path; on success it replaces path, on error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, mode) as handle:  # handle.name is the temp path, for checks before rename
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> Path:
    with atomic_open(path) as handle:
        handle.write(text)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, frame) -> Path:
    with atomic_open(path) as handle:
        frame.to_csv(handle, index=False)
    return path


def append_jsonl(path: Path, event: dict[str, Any]) -> None:
    """Append one event; a line is written whole or not at all (single write call)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(event) + "\n")


def kit_home() -> Path:
    """kit's own folder (the local leaderboard lives here); KIT_HOME overrides it."""
    return Path(os.environ.get("KIT_HOME") or Path.home() / ".kit")
