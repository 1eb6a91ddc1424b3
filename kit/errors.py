"""Errors a user can fix. The CLI turns every KitError into one line on stderr and exit code 2.

describe() does the same for the failures that come from the outside world rather than from kit
(a full disk, a read-only folder, a locked database, an unparsable table, a decompression bomb):
one line naming the file and the fix. Anything else is a bug in kit: save_traceback() keeps its
traceback under KIT_HOME so the one line can say where. This module stays import-light (the CLI
imports it for `kit --help`): foreign exception types are recognised by name, not imported.
"""

import datetime as dt
import errno
import os
from pathlib import Path


class KitError(Exception):
    """A mistake in input or usage; the message names the file or field and the fix."""

    exit_code = 2


class ConfigError(KitError):
    """kit.toml or a --set override is wrong."""


class DataError(KitError):
    """The competition's data is missing or malformed."""


class ProblemsError(KitError):
    """Several problems with one file; the CLI prints each on its own line."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class SubmissionError(ProblemsError):
    """A submission file does not match the competition's format."""


class FoldsError(ProblemsError):
    """folds.csv leaks between folds or leaves a class out of one."""


class LimitError(KitError):
    """A platform limit is reached (daily submissions)."""


class UnsafePathError(KitError):
    """A user-given name that is not a plain name, or a path that escapes its folder."""


class Interrupted(KitError):
    """Ctrl-C: the message says how to continue; the CLI exits 130 as shells expect."""

    exit_code = 130


MAX_MESSAGE = 600  # characters of one error line; hostile input must not make a 7.9 MB line
MAX_PROBLEMS = 20  # lines of a ProblemsError printed; the rest are counted

_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free disk space, then run the command again",
    errno.EDQUOT: "disk quota exceeded: free space, then run the command again",
    errno.EROFS: "the file system is read-only: work in a writable copy of the folder",
    errno.EACCES: "permission denied: fix the file's or folder's permissions",
    errno.EPERM: "operation not permitted: fix the file's or folder's permissions",
    errno.ENOENT: "not found: check the path (or run the step that makes it)",
    errno.EISDIR: "is a folder, not a file: give a file",
    errno.ENOTDIR: "a part of the path is not a folder: check the path",
    errno.EMFILE: "too many open files: lower train.num_workers or raise `ulimit -n`",
    errno.ENAMETOOLONG: "the file name is too long: use a shorter name",
}


EXAMPLES = 3  # offending names an error line shows before "(+N more)"


def examples(values, n: int = EXAMPLES, width: int = 60) -> str:
    """'a, b, c (+7 more)': the first n values, each clipped to width characters."""
    values = list(values)
    shown = [str(v) if len(str(v)) <= width else str(v)[: width - 3] + "..." for v in values[:n]]
    more = f" (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(shown) + more


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """text on one line, at most limit characters (the cut is marked)."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    suffix = f" ... (+{len(flat) - limit} chars)"
    return flat[: limit - len(suffix)] + suffix


def message_of(error: BaseException) -> str:
    """A KitError's message; one raised in a DataLoader worker comes back wrapped in the worker's
    traceback text, so only its own last line is kept."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith(("kit.", "Kit")) and ": " in last else last
    return text


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def describe(error: BaseException) -> tuple[str, int] | None:
    """(one line naming the file and the fix, exit code) for an outside-world failure, or None
    when error looks like a bug in kit."""
    names = _names(error)
    if isinstance(error, OSError) and error.errno in _OS_FIXES:
        where = error.filename or "a file kit needed"
        return f"{where}: {_OS_FIXES[error.errno]}", 2
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or 'a file kit needed'}: {error.strerror}", 2
    if "DecompressionBombError" in names or "DecompressionBombWarning" in names:
        return (
            f"an image is a decompression bomb ({one_line(error, 200)}): remove it, or raise "
            "data.max_pixels in kit.toml if it is a real image"
        ), 2
    if names & {"EmptyDataError", "ParserError"}:
        return f"a CSV table cannot be parsed ({one_line(error, 200)}): fix or replace the file", 2
    if isinstance(error, UnicodeDecodeError):
        return "a text file is not valid UTF-8 (a binary file?): give a UTF-8 CSV or TOML", 2
    if isinstance(error, UnicodeEncodeError):
        return (
            f"a file name cannot be encoded ({one_line(error.object[error.start : error.end])!r} "
            "is not UTF-8): rename the file with UTF-8 characters"
        ), 2
    if names & {"OperationalError", "DatabaseError", "IntegrityError"} and (
        type(error).__module__.startswith("sqlite3")
    ):
        return (
            f"a kit database failed ({one_line(error, 200)}): runs/ledger.sqlite or "
            "$KIT_HOME/leaderboard.sqlite is locked, read-only or damaged; close other kit "
            "processes, fix its permissions, or restore it"
        ), 2
    if isinstance(error, MemoryError):
        return "out of memory: lower train.batch_size / predict.batch_size or the image size", 2
    return None


def save_traceback(text: str) -> str | None:
    """Write a bug's traceback to $KIT_HOME/crashes/; its path, or None when it cannot be saved."""
    home = Path(os.environ.get("KIT_HOME") or Path.home() / ".kit")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    path = home / "crashes" / f"traceback-{stamp}-{os.getpid()}.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError:
        return None
    return str(path)
