"""Where data comes from and submissions go: competition.platform picks a Platform.

- local (kit/platforms/local.py): an offline leaderboard on this machine (bundled examples);
- kaggle (kit/platforms/kaggle.py): Kaggle, through its official client;
- host (kit/platforms/host.py): a `kit host` competition server.

Each is one class with the methods of `Platform`; PLATFORMS maps competition.platform to it, so
adding a platform is one module and one line here. What every platform shares — validating a
submission first, recording it with its runs — lives here, once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kit.choices import PlatformName, choices
from kit.competition import Competition
from kit.errors import ConfigError, KitError
from kit.fileio import append_jsonl
from kit.ledger import record_submission as record_in_ledger
from kit.results import SubmitResult
from kit.run import known_runs
from kit.submission import check_submission

if TYPE_CHECKING:
    import pandas as pd

# competition.platform -> "module:Class"; modules are imported only when their platform is used
PLATFORMS = {
    "local": "kit.platforms.local:LocalPlatform",
    "kaggle": "kit.platforms.kaggle:KagglePlatform",
    "host": "kit.platforms.host:HostPlatform",
}
assert tuple(PLATFORMS) == choices(PlatformName)  # kit.toml's choice list is this one

Record = Callable[[dict], None]  # records an accepted submission (ledger, history)


class Platform(Protocol):
    """What kit asks of a competition's platform."""

    # True where record() runs before the submission counts (local): a failed record undoes it
    counts_after_record: bool

    def download(
        self, *, force: bool, limit: int | None, progress: bool, replace_key: bool
    ) -> dict: ...

    def list_files(self) -> list[dict]: ...

    def submit(self, file: Path, message: str, *, wait: bool, record: Record) -> dict:
        """Submit a validated file; call record(result) once the platform accepted it (the
        local platform calls it inside its transaction, so a failed record is not counted)."""
        ...

    def submit_kernel(
        self, kernel: str, version: int | None, message: str, *, output: str, wait: bool
    ) -> dict: ...

    def submissions(self) -> pd.DataFrame: ...

    def leaderboard(self, *, private: bool, top: int) -> pd.DataFrame: ...


def create_platform(competition: Competition) -> Platform:
    """The Platform of competition.platform, bound to the competition."""
    module, _, name = PLATFORMS[competition.config.competition.platform].partition(":")
    return getattr(importlib.import_module(module), name)(competition)


def submit(
    competition: Competition,
    file: Path | None,
    message: str,
    *,
    wait: bool = False,
    runs: list[str] | None = None,
    kernel: str | None = None,
    version: int | None = None,
) -> SubmitResult:
    """Validate file against sample_submission, then submit it to the competition's platform.

    With kernel ("OWNER/SLUG") and version, makes a code-competition submission of that kernel
    version instead (Kaggle only; file is then the name of the kernel's output, default
    submission.csv). wait polls the platform until the submission is scored. Every accepted
    submission is recorded in the ledger with the runs it came from.
    """
    platform = create_platform(competition)
    if kernel is not None:
        output = Path(file).name if file else "submission.csv"
        result = platform.submit_kernel(kernel, version, message, output=output, wait=wait)
        runs = runs if runs is not None else _runs_behind_kernel(competition, kernel)
        record_submission(competition, result, message=message, runs=runs, kernel=kernel)
        return SubmitResult.from_platform(result)

    if file is None:
        raise ConfigError("name the submission file to submit, or --kernel OWNER/SLUG")
    file = Path(file)
    check_submission(competition, file)
    runs = runs if runs is not None else _runs_behind(competition, file)

    def record(result: dict) -> None:
        try:
            record_submission(competition, result, message=message, runs=runs, file=file)
        except (OSError, sqlite3.Error) as error:
            detail = getattr(error, "strerror", None) or error
            outcome = (
                "so it was not counted: make the competition folder writable and submit again"
                if platform.counts_after_record
                else "but the platform has it: make the folder writable; `kit submissions` lists it"
            )
            raise KitError(
                f"could not record the submission in {competition.submissions_dir} or "
                f"{competition.runs_dir} ({detail}), {outcome}"
            ) from None

    return SubmitResult.from_platform(platform.submit(file, message, wait=wait, record=record))


def _runs_behind(competition: Competition, file: Path) -> list[str]:
    """The runs a submission came from, as far as kit can tell: submissions/<run>.csv."""
    return [file.stem] if file.stem in known_runs(competition) else []


def _runs_behind_kernel(competition: Competition, kernel: str) -> list[str]:
    """The run a kernel packages, from kernels/<slug>/dataset/kit-kernel.json when built here."""
    marker = competition.kernel_marker(kernel.split("/")[-1])
    try:
        return [json.loads(marker.read_text())["run"]]
    except (OSError, ValueError, KeyError):
        return []


def downloaded(source: str, data_dir: Path, files: list) -> dict:
    """What a platform's download returns: where from, where to, how many files (none: current)."""
    return {"source": source, "data_dir": str(data_dir), "files": len(files), "skipped": not files}


HISTORY_NAME = "history.jsonl"  # in submissions/: one JSON line per accepted submission


def record_submission(
    competition: Competition,
    result: dict,
    *,
    message: str,
    runs: list[str],
    file: Path | None = None,
    kernel: str | None = None,
) -> Path:
    """Record an accepted submission: a row per run in the run ledger (runs/ledger.sqlite,
    kit/ledger.py), and the whole of it in submissions/history.jsonl (ref, message, file hash,
    kernel, status), which also keeps submissions no run is known for."""
    platform = competition.config.competition.platform
    score = result.get("public_score")
    entry = {
        "event": "submission",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "competition": competition.name,
        "platform": platform,
        "runs": list(runs),
        "message": message,
        "file": str(file) if file else None,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest() if file else None,
        "kernel": kernel,
        "ref": result.get("ref", result.get("id")),
        "status": result.get("status"),
        "public_score": score,
    }
    if runs:
        record_in_ledger(competition, list(runs), file or f"kernel:{kernel}", platform, score)
    path = competition.submissions_dir / HISTORY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, entry)
    return path


def list_files(competition: Competition) -> list[dict]:
    """The competition's data files (name, size, creation_date), without downloading."""
    return create_platform(competition).list_files()


def submissions(competition: Competition) -> pd.DataFrame:
    """Your submissions with their scores, newest first, as a table."""
    return create_platform(competition).submissions()


def leaderboard(competition: Competition, *, private: bool = False, top: int = 20):
    """The competition's leaderboard as a table (private scores: the host's view, where the
    platform allows it). On Kaggle: the top rows, plus your team's row (you = True) below."""
    return create_platform(competition).leaderboard(private=private, top=top)
