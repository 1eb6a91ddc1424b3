"""The runs ledger: one row per run and one per submission, in runs/ledger.sqlite.

It lives in the competition folder beside the runs it describes (unlike the local leaderboard's
answer key, it holds nothing a model must not see). Every row can be rebuilt from runs/<run>/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path

from kit.competition import Competition
from kit.errors import KitError

SCHEMA = """
create table if not exists runs (
    run text primary key, model text, metric text, cv real, cv_std real, folds text,
    epochs integer, best_epochs text, seconds real, git_commit text, folds_hash text,
    started_at text, complete integer
);
create table if not exists submissions (
    id integer primary key autoincrement, run text, file text, platform text,
    public_score real, submitted_at text
);
"""


def ledger_path(competition: Competition) -> Path:
    return competition.runs_dir / "ledger.sqlite"


@contextlib.contextmanager
def connect(competition: Competition):
    path = ledger_path(competition)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30)
    connection.row_factory = sqlite3.Row
    try:
        connection.executescript(SCHEMA)
        with connection:  # one transaction: all of a record or none of it
            yield connection
    finally:
        connection.close()


def record_run(competition: Competition, run: str) -> dict:
    """Insert or refresh the run's row from runs/<run>/run.json, config.toml and metrics.json."""
    from kit.config import load_config

    run_dir = competition.run_dir(run)
    info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = load_config(run_dir / "config.toml")
    row = {
        "run": run,
        "model": info.get("model"),
        "metric": metrics["metric"],
        "cv": metrics["cv"],
        "cv_std": metrics.get("cv_std"),
        "folds": json.dumps(metrics.get("fold_ids", [])),
        "epochs": config.train.epochs,
        "best_epochs": json.dumps(metrics.get("best_epochs", [])),
        "seconds": metrics.get("seconds"),
        "git_commit": info.get("git_commit", ""),
        "folds_hash": info.get("folds_hash", ""),
        "started_at": info.get("started_at", ""),
        "complete": int(bool(metrics.get("complete", True))),
    }
    with connect(competition) as db:
        db.execute(
            f"insert or replace into runs ({', '.join(row)}) values ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    return row


def record_submission(
    competition: Competition,
    runs: list[str],
    file: str | Path,
    platform: str,
    public_score: float | None,
) -> None:
    """Remember that `file`, made from `runs`, scored `public_score` on `platform`."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with connect(competition) as db:
        db.executemany(
            "insert into submissions (run, file, platform, public_score, submitted_at) "
            "values (?, ?, ?, ?, ?)",
            [(run, str(file), platform, public_score, now) for run in runs],
        )


def list_runs(competition: Competition):
    """A DataFrame: one row per run, newest first, with its best public leaderboard score."""
    import pandas as pd

    for run_dir in sorted(competition.runs_dir.glob("*/metrics.json")):
        known = _known_runs(competition)
        if run_dir.parent.name not in known and (run_dir.parent / "run.json").exists():
            record_run(competition, run_dir.parent.name)  # a run the ledger missed (copied in)
    with connect(competition) as db:
        rows = db.execute(
            "select r.run, r.model, r.metric, r.cv, r.cv_std, r.folds, r.epochs, r.seconds, "
            "r.git_commit, r.folds_hash, r.complete, max(s.public_score) as public, "
            "count(s.id) as submissions from runs r left join submissions s on s.run = r.run "
            "group by r.run order by r.started_at desc, r.run"
        ).fetchall()
    return pd.DataFrame([dict(r) for r in rows])


def _known_runs(competition: Competition) -> set[str]:
    with connect(competition) as db:
        return {r["run"] for r in db.execute("select run from runs")}


def show_run(competition: Competition, run: str) -> dict:
    """Everything about one run: its ledger row, metrics.json, and its submissions."""
    run_dir = competition.run_dir(run)
    if run not in _known_runs(competition):
        if not (run_dir / "metrics.json").exists():
            raise KitError(f"run '{run}' has no finished fold yet: kit train --resume {run}")
        record_run(competition, run)
    with connect(competition) as db:
        row = dict(db.execute("select * from runs where run = ?", (run,)).fetchone())
        submissions = [
            dict(r)
            for r in db.execute(
                "select file, platform, public_score, submitted_at from submissions "
                "where run = ? order by id",
                (run,),
            )
        ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = run_dir / "report.html"
    return {
        **row,
        "folds": json.loads(row["folds"]),
        "best_epochs": json.loads(row["best_epochs"]),
        "fold_scores": metrics.get("folds", []),
        "per_class": metrics.get("per_class", {}),
        "missing_folds": metrics.get("missing_folds", []),
        "submissions": submissions,
        "report": str(report) if report.exists() else None,
        "run_dir": str(run_dir),
    }
