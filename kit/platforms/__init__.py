"""Where submissions go: the local offline leaderboard, or Kaggle (competition.platform)."""

from __future__ import annotations

from pathlib import Path

from kit.competition import Competition
from kit.errors import ConfigError

PLATFORMS = ("local", "kaggle")


def _platform(competition: Competition) -> str:
    platform = competition.config.competition.platform
    if platform not in PLATFORMS:
        raise ConfigError(
            f"competition.platform {platform!r} is unknown: use one of {', '.join(PLATFORMS)}"
        )
    return platform


def kaggle_slug(competition: Competition) -> str:
    """The Kaggle competition a kaggle-platform folder talks to (competition.source)."""
    return competition.config.competition.source or competition.name


def submit(
    competition: Competition,
    file: Path | None,
    message: str,
    *,
    wait: bool = False,
    runs: list[str] | None = None,
    kernel: str | None = None,
    version: int | None = None,
) -> dict:
    """Validate file against sample_submission, then submit it to the competition's platform.

    With kernel ("OWNER/SLUG") and version, makes a code-competition submission of that kernel
    version instead (Kaggle only; file is then the name of the kernel's output, default
    submission.csv). wait polls Kaggle until the submission is scored. Every accepted
    submission is recorded in the ledger with the runs it came from.
    """
    platform = _platform(competition)
    if kernel is not None:
        if platform != "kaggle":
            raise ConfigError(
                '--kernel submits a Kaggle notebook: set competition.platform = "kaggle"'
            )
        from kit.platforms import kaggle

        output = Path(file).name if file else "submission.csv"
        result = kaggle.submit_code(
            kaggle_slug(competition), kernel, version, message, output_file=output, wait=wait
        )
        runs = runs if runs is not None else _runs_behind_kernel(competition, kernel)
        record_submission(competition, result, message=message, runs=runs, kernel=kernel)
        return result

    from kit.submission import check_submission

    if file is None:
        raise ConfigError("name the submission file to submit, or --kernel OWNER/SLUG")
    file = Path(file)
    check_submission(competition, file)
    runs = runs if runs is not None else _runs_behind(competition, file)
    if platform == "kaggle":
        from kit.platforms import kaggle

        result = kaggle.submit(kaggle_slug(competition), file, message, wait=wait)
    else:
        from kit.platforms.local import LocalLeaderboard

        board = LocalLeaderboard()
        try:
            result = board.submit(competition.name, file, message)
        finally:
            board.close()
    record_submission(competition, result, message=message, runs=runs, file=file)
    return result


def _runs_behind(competition: Competition, file: Path) -> list[str]:
    """The runs a submission came from, as far as kit can tell: submissions/<run>.csv."""
    return [file.stem] if (competition.runs_dir / file.stem / "config.toml").exists() else []


def _runs_behind_kernel(competition: Competition, kernel: str) -> list[str]:
    """The run a kernel packages, from kernels/<slug>/dataset/kit-kernel.json when built here."""
    import json

    marker = competition.root / "kernels" / kernel.split("/")[-1] / "dataset" / "kit-kernel.json"
    try:
        return [json.loads(marker.read_text())["run"]]
    except (OSError, ValueError, KeyError):
        return []


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
    import datetime as dt
    import hashlib

    from kit.fileio import append_jsonl
    from kit.ledger import record_submission as record_in_ledger

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
    """A Kaggle competition's data files (name, size, creation_date), without downloading."""
    if _platform(competition) != "kaggle":
        raise ConfigError(
            f"{competition.name} is a local competition: only Kaggle competitions list files"
        )
    from kit.platforms import kaggle

    return kaggle.list_files(kaggle_slug(competition))


def submissions(competition: Competition):
    """Your submissions with their scores, newest first, as a table."""
    import pandas as pd

    if _platform(competition) == "kaggle":
        from kit.platforms import kaggle

        return pd.DataFrame(kaggle.submissions(kaggle_slug(competition)))
    from kit.platforms.local import LocalLeaderboard, team_name

    board = LocalLeaderboard()
    try:
        history = board.history(competition.name, team_name())
    finally:
        board.close()
    return history.iloc[::-1].reset_index(drop=True)


def leaderboard(competition: Competition, *, private: bool = False, top: int = 20):
    """The competition's leaderboard as a table (private scores: the host's view).

    On Kaggle: the top rows of the public board, plus your team's row (you = True) below them.
    """
    if _platform(competition) == "kaggle":
        import pandas as pd

        from kit.platforms import kaggle

        return pd.DataFrame(kaggle.leaderboard(kaggle_slug(competition), top=top))
    from kit.platforms.local import LocalLeaderboard

    board = LocalLeaderboard()
    try:
        return board.leaderboard(competition.name, private=private)
    finally:
        board.close()
