"""Writing artefacts so that a crash never leaves half a file: write beside, then rename.

A writer holds an flock on its temp file while it writes, so the next write to the same folder
can tell a killed writer's leftover (unlocked) from a live one's (locked) and remove only the
former. Files get the mode the umask gives (as `open` would), not mkstemp's private 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
STALE_SECONDS = 1.0  # a temp file younger than this may be a writer between mkstemp and flock


def umask_mode(mode: int = 0o666) -> int:
    """mode as the process's umask leaves it (what a plain open() or mkdir() would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove `.<name>.*.tmp` files that no live writer holds (a killed writer's leftovers)."""
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".")]
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        if not path.name.endswith(TEMP_SUFFIX) or not path.is_file() or path.is_symlink():
            continue
        try:
            if now - path.stat().st_mtime < STALE_SECONDS:
                continue
            with open(path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a live writer
                path.unlink()
            removed.append(path)
        except OSError:  # locked (BlockingIOError), gone, or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside path; on success it replaces path, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while fd is open: marks a live writer's temp file
        os.fchmod(fd, umask_mode())
        with open(tmp, mode) as handle:  # handle.name is the temp path, for checks before rename
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


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


def count_header_fields(path: Path, max_bytes: int = 64 << 20) -> int:
    """The number of comma-separated fields in a CSV file's first line, read in bounded memory
    (a parser given a million-column header works for minutes before any check can run)."""
    count, seen = 1, 0
    with open(path, "rb") as handle:
        while seen < max_bytes:
            block = handle.read(1 << 20)
            if not block:
                break
            end = block.find(b"\n")
            part = block if end < 0 else block[:end]
            count += part.count(b",")
            seen += len(block)
            if end >= 0:
                break
    return count


def kit_home() -> Path:
    """kit's own folder (the local leaderboard lives here); KIT_HOME overrides it."""
    return Path(os.environ.get("KIT_HOME") or Path.home() / ".kit")


def private_dir(path: Path) -> Path:
    """Make path (and parents) and make path itself 0700: only its owner may list or enter it.

    A folder that is not kit's own to close (someone else's, a sticky shared one like /tmp, the
    home folder itself, when KIT_HOME points there) keeps its mode."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        info = path.stat()
        shared = info.st_mode & stat.S_ISVTX or path.resolve() == Path.home().resolve()
        if info.st_uid == os.getuid() and not shared:
            os.chmod(path, 0o700)
    return path
