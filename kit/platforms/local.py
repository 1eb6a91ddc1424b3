"""The local offline leaderboard: a hidden answer key and every submission in one SQLite file.

The database lives under kit's home folder, never inside a competition folder, so no training or
prediction path can read the answers.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError, LimitError
from kit.fileio import kit_home
from kit.metrics import get_metric

SCHEMA = """
CREATE TABLE IF NOT EXISTS competitions (
    name TEXT PRIMARY KEY, metric TEXT NOT NULL, daily_limit INTEGER NOT NULL,
    id_column TEXT NOT NULL, target_column TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    competition TEXT NOT NULL REFERENCES competitions(name), id TEXT NOT NULL,
    target TEXT NOT NULL, usage TEXT NOT NULL CHECK (usage IN ('Public', 'Private')),
    PRIMARY KEY (competition, id));
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY, competition TEXT NOT NULL REFERENCES competitions(name),
    team TEXT NOT NULL, submitted_at TEXT NOT NULL, message TEXT NOT NULL,
    file_name TEXT NOT NULL, file_sha256 TEXT NOT NULL,
    public_score REAL NOT NULL, private_score REAL NOT NULL);
"""


def leaderboard_path() -> Path:
    return kit_home() / "leaderboard.sqlite"


def team_name() -> str:
    return os.environ.get("KIT_TEAM") or getpass.getuser()


class LocalLeaderboard:
    """Host and player side of offline competitions in one database."""

    def __init__(self, path: Path | None = None):
        self.path = path or leaderboard_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def register(
        self,
        name: str,
        answers: pd.DataFrame,
        *,
        metric: str,
        daily_limit: int,
        id_column: str = "id",
        target_column: str = "label",
    ) -> None:
        """Store (or replace) a competition's answer key: columns id, target, usage."""
        if get_metric(metric).from_labels is None:
            raise KitError(
                f"metric {metric!r} needs probabilities; the local leaderboard scores labels"
            )
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        rows = [(name, str(i), str(t), u) for i, t, u in answers[["id", "target", "usage"]].values]
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO competitions VALUES (?, ?, ?, ?, ?, ?)",
                (name, metric, daily_limit, id_column, target_column, now),
            )
            self.db.execute("DELETE FROM answers WHERE competition = ?", (name,))
            self.db.executemany("INSERT INTO answers VALUES (?, ?, ?, ?)", rows)

    def has(self, name: str) -> bool:
        query = "SELECT 1 FROM competitions WHERE name = ?"
        return self.db.execute(query, (name,)).fetchone() is not None

    def _competition(self, name: str) -> sqlite3.Row:
        row = self.db.execute(
            "SELECT metric, daily_limit, id_column, target_column FROM competitions WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise KitError(
                f"competition '{name}' has no answer key in {self.path}: "
                "run `kit download` (it registers the key) or set competition.platform"
            )
        return row

    def submissions_today(self, name: str, team: str) -> int:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM submissions WHERE competition = ? AND team = ? "
            "AND substr(submitted_at, 1, 10) = ?",
            (name, team, today),
        ).fetchone()
        return count

    def submit(self, name: str, file: Path, message: str, team: str | None = None) -> dict:
        """Score a validated submission file; return its id and public score (private kept)."""
        metric_name, daily_limit, id_column, target_column = self._competition(name)
        team = team or team_name()
        if self.submissions_today(name, team) >= daily_limit:
            raise LimitError(
                f"daily limit of {daily_limit} submissions to '{name}' reached for team '{team}': "
                "try again after 00:00 UTC (competition.daily_limit sets it for new competitions)"
            )
        data = Path(file).read_bytes()
        submission = pd.read_csv(file, dtype=str)
        answers = pd.read_sql_query(
            "SELECT id, target, usage FROM answers WHERE competition = ?", self.db, params=(name,)
        )
        merged = answers.merge(
            submission[[id_column, target_column]], left_on="id", right_on=id_column, how="left"
        )
        metric = get_metric(metric_name)
        scores = {}
        for usage in ("Public", "Private"):
            part = merged[merged["usage"] == usage]
            scores[usage] = _label_score(metric, part["target"], part[target_column])
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO submissions (competition, team, submitted_at, message, file_name,"
                " file_sha256, public_score, private_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name, team, now, message, Path(file).name, hashlib.sha256(data).hexdigest(),
                    scores["Public"], scores["Private"],
                ),
            )  # fmt: skip
        return {
            "id": cursor.lastrowid,
            "competition": name,
            "team": team,
            "metric": metric_name,
            "public_score": scores["Public"],
            "submitted_at": now,
            "remaining_today": daily_limit - self.submissions_today(name, team),
        }

    def leaderboard(self, name: str, *, private: bool = False) -> pd.DataFrame:
        """Each team's best submission by public score (as Kaggle ranks before the reveal)."""
        metric_name = self._competition(name)[0]
        frame = pd.read_sql_query(
            "SELECT team, submitted_at, message, public_score, private_score FROM submissions "
            "WHERE competition = ?",
            self.db,
            params=(name,),
        )
        ascending = not get_metric(metric_name).greater_is_better
        key = "private_score" if private else "public_score"
        frame = frame.sort_values([key, "submitted_at"], ascending=[ascending, True])
        entries = frame.groupby("team").size().rename("entries")
        best = frame.drop_duplicates("team").join(entries, on="team")
        if not private:
            best = best.drop(columns="private_score")
        best.insert(0, "rank", range(1, len(best) + 1))
        return best.reset_index(drop=True)

    def history(self, name: str, team: str | None = None) -> pd.DataFrame:
        query = "SELECT id, team, submitted_at, message, file_name, public_score FROM submissions"
        query += " WHERE competition = ?" + (" AND team = ?" if team else "") + " ORDER BY id"
        params = (name, team) if team else (name,)
        return pd.read_sql_query(query, self.db, params=params)


def _label_score(metric, y_true: pd.Series, y_pred: pd.Series) -> float:
    if len(y_true) == 0:
        return float("nan")
    true = y_true.astype(str).to_numpy()
    pred = y_pred.fillna("").astype(str).to_numpy()
    # class labels compare as strings ("3" == "3"); metrics needing order (qwk) get numbers
    if metric.name == "qwk":
        true, pred = true.astype(float), np.array([float(p) if p else np.nan for p in pred])
    return float(metric.from_labels(true, pred))
