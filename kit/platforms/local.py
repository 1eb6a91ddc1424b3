"""The local offline leaderboard: a hidden answer key and every submission in one SQLite file.

The database lives under kit's home folder, never inside a competition folder, so no training or
prediction path can read the answers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import io
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.examples import EXAMPLES, build_digits
from kit.errors import ConfigError, KitError, LimitError
from kit.fileio import kit_home, private_dir
from kit.metrics import get_metric
from kit.submission import normalise_labels

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


KEY_COLUMNS = ("metric", "daily_limit", "id_column", "target_column", "answers_sha256", "root")


def leaderboard_path() -> Path:
    return kit_home() / "leaderboard.sqlite"


def team_name() -> str:
    return os.environ.get("KIT_TEAM") or getpass.getuser()


def answers_digest(rows: list[tuple]) -> str:
    """sha256 of an answer key's (id, target, usage) rows, in id order."""
    text = "\n".join(f"{i}\t{t}\t{u}" for i, t, u in sorted(rows))
    return hashlib.sha256(text.encode()).hexdigest()


def _private_file(path: Path) -> None:
    """Create path as 0600 (or make it so): the answer key is for the host's eyes only."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class LocalLeaderboard:
    """Host and player side of offline competitions in one database.

    The database and its folder are private (0600 in a 0700 folder). A submission's limit check
    and its INSERT are one `BEGIN IMMEDIATE` transaction, so concurrent submissions cannot pass
    the daily limit together; registering over an existing answer key is refused unless the host
    asks for it (replace=True), so no download can silently raise a limit or swap another key.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or leaderboard_path()
        private_dir(self.path.parent)
        _private_file(self.path)
        # autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE), never implicitly
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 60000")
        self._migrate()

    def _migrate(self) -> None:
        with self._transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(competitions)")}
            for column in ("answers_sha256", "root"):
                if column not in have:  # a database from before these columns
                    self.db.execute(f"ALTER TABLE competitions ADD COLUMN {column} TEXT")

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction, holding the write lock from its first statement."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LocalLeaderboard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def register(
        self,
        name: str,
        answers: pd.DataFrame,
        *,
        metric: str,
        daily_limit: int,
        id_column: str = "id",
        target_column: str = "label",
        root: Path | str | None = None,
        replace: bool = False,
    ) -> bool:
        """Store a competition's answer key (columns id, target, usage); True when written.

        Registering the same key again is a no-op. A different key, limit, metric or folder for
        a name that is registered already is refused unless replace (a host's explicit act)."""
        if get_metric(metric).from_labels is None:
            raise KitError(
                f"metric {metric!r} needs probabilities; the local leaderboard scores labels"
            )
        rows = [(str(i), str(t), u) for i, t, u in answers[["id", "target", "usage"]].values]
        digest = answers_digest(rows)
        where = str(Path(root).resolve()) if root is not None else None
        wanted = (metric, int(daily_limit), id_column, target_column, digest, where)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._transaction():
            known = self._key_changes(name, wanted)
            if known is not None and not replace:
                changes, same = known
                if changes:
                    raise self._registered_error(name, changes)
                if same:
                    return False  # the same key again
            self.db.execute(
                "INSERT OR REPLACE INTO competitions (name, metric, daily_limit, id_column,"
                " target_column, created_at, answers_sha256, root)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, metric, int(daily_limit), id_column, target_column, now, digest, where),
            )
            self.db.execute("DELETE FROM answers WHERE competition = ?", (name,))
            self.db.executemany(
                "INSERT INTO answers VALUES (?, ?, ?, ?)", [(name, *row) for row in rows]
            )
        return True

    def check_registration(
        self,
        name: str,
        *,
        metric: str,
        daily_limit: int,
        id_column: str,
        target_column: str,
        root: Path | str | None,
        answers_change: bool = False,
    ) -> None:
        """Before data is rebuilt: refuse what register would refuse (answers_change: the
        rebuild will give other answers)."""
        where = str(Path(root).resolve()) if root is not None else None
        digest = "(changing)" if answers_change else None
        known = self._key_changes(
            name, (metric, int(daily_limit), id_column, target_column, digest, where)
        )
        if known is not None and known[0]:
            raise self._registered_error(name, known[0])

    def _key_changes(self, name: str, wanted: tuple) -> tuple[list[str], bool] | None:
        """(what a registration would change of name's key, whether its answers are the same);
        None when name is not registered. Other answers count as a change once submissions are
        scored; before that the folder may rebuild its data (another --limit)."""
        existing = self.db.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM competitions WHERE name = ?", (name,)
        ).fetchone()
        if existing is None:
            return None
        changes = [
            f"{column} {old!r} -> {new!r}"
            for column, old, new in zip(KEY_COLUMNS, existing, wanted, strict=True)
            if old is not None and new is not None and old != new and column != "answers_sha256"
        ]
        digest = wanted[4]
        same = digest is None or existing[4] == digest
        if not same:
            (scored,) = self.db.execute(
                "SELECT COUNT(*) FROM submissions WHERE competition = ?", (name,)
            ).fetchone()
            if scored:
                changes.append(f"other answers, while {scored} submission(s) are scored")
        return changes, same

    def _registered_error(self, name: str, changes: list[str]) -> KitError:
        return KitError(
            f"competition '{name}' is registered in {self.path} already "
            f"({'; '.join(changes)}): replacing an answer key or its limit is the host's act: "
            "`kit download --force --replace-key`, or use another competition.name"
        )

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

    def _limit_error(self, name: str, team: str, daily_limit: int) -> LimitError:
        return LimitError(
            f"daily limit of {daily_limit} submissions to '{name}' reached for team '{team}': "
            "try again after 00:00 UTC (competition.daily_limit sets it for new competitions)"
        )

    def submit(
        self,
        name: str,
        file: Path,
        message: str,
        team: str | None = None,
        *,
        on_accepted: Callable[[dict], None] | None = None,
    ) -> dict:
        """Score a validated submission file; return its id and public score (private kept).

        The limit check and the INSERT are one transaction. on_accepted(result) runs inside it,
        before the commit: the submission counts only if what it records succeeds too."""
        metric_name, daily_limit, id_column, target_column = self._competition(name)
        team = team or team_name()
        if self.submissions_today(name, team) >= daily_limit:  # cheap early refusal
            raise self._limit_error(name, team, daily_limit)
        data = Path(file).read_bytes()
        submission = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        answers = pd.read_sql_query(
            "SELECT id, target, usage FROM answers WHERE competition = ?", self.db, params=(name,)
        )
        integers = bool(answers["target"].str.fullmatch(r"-?\d+").all())
        submission[target_column] = normalise_labels(submission[target_column], integers)
        merged = answers.merge(
            submission[[id_column, target_column]], left_on="id", right_on=id_column, how="left"
        )
        metric = get_metric(metric_name)
        scores = {}
        for usage in ("Public", "Private"):
            part = merged[merged["usage"] == usage]
            scores[usage] = _label_score(metric, part["target"], part[target_column])
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._transaction():
            done = self.submissions_today(name, team)
            if done >= daily_limit:
                raise self._limit_error(name, team, daily_limit)
            cursor = self.db.execute(
                "INSERT INTO submissions (competition, team, submitted_at, message, file_name,"
                " file_sha256, public_score, private_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    team,
                    now,
                    message,
                    Path(file).name,
                    hashlib.sha256(data).hexdigest(),
                    scores["Public"],
                    scores["Private"],
                ),
            )
            result = {
                "id": cursor.lastrowid,
                "competition": name,
                "team": team,
                "metric": metric_name,
                "public_score": scores["Public"],
                "submitted_at": now,
                "remaining_today": daily_limit - done - 1,
            }
            if on_accepted is not None:
                on_accepted(result)
        return result

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


class LocalPlatform:
    """An offline competition on this machine: a bundled example's data, and the leaderboard in
    $KIT_HOME/leaderboard.sqlite, which holds the answer key out of the competition's reach."""

    counts_after_record = True  # record() runs inside the INSERT's transaction

    def __init__(self, competition):
        self.competition = competition

    def download(self, *, force: bool, limit: int | None, progress: bool, replace_key: bool):
        source = self.competition.config.competition.source
        if not source.startswith("example:"):
            raise ConfigError(
                'competition.source in kit.toml is empty: set it to "example:digits", or to a '
                'Kaggle slug with competition.platform = "kaggle"; data you already have needs '
                "no download: copy it under data/ (or scaffold with `kit new NAME --data PATH`)"
            )
        return build_example(
            self.competition,
            source.removeprefix("example:"),
            force=force,
            limit=limit,
            replace_key=replace_key,
        )

    def list_files(self) -> list[dict]:
        raise ConfigError(
            f"{self.competition.name} is a local competition: only Kaggle and kit host "
            "competitions list their files"
        )

    def submit(self, file: Path, message: str, *, wait: bool, record) -> dict:
        with LocalLeaderboard() as board:
            return board.submit(self.competition.name, file, message, on_accepted=record)

    def submit_kernel(self, kernel, version, message, *, output, wait) -> dict:
        raise ConfigError('--kernel submits a Kaggle notebook: set competition.platform = "kaggle"')

    def submissions(self) -> pd.DataFrame:
        with LocalLeaderboard() as board:
            history = board.history(self.competition.name, team_name())
        return history.iloc[::-1].reset_index(drop=True)

    def leaderboard(self, *, private: bool, top: int) -> pd.DataFrame:
        with LocalLeaderboard() as board:
            return board.leaderboard(self.competition.name, private=private)


def build_example(
    competition: Competition,
    example: str,
    *,
    force: bool,
    limit: int | None,
    replace_key: bool = False,
) -> dict:
    """Build the bundled example under data/ and register its hidden answer key here."""
    if example not in EXAMPLES:
        raise ConfigError(f"competition.source example {example!r} is unknown: use example:digits")
    with LocalLeaderboard() as board:
        manifest = competition.data_dir / "DATA.json"
        same_limit = manifest.exists() and json.loads(manifest.read_text()).get("limit") == limit
        current = same_limit and board.has(competition.name)
        if current and not force:
            return {
                "source": f"example:{example}",
                "data_dir": str(competition.data_dir),
                "skipped": True,
            }
        config = competition.config
        key = {
            "metric": config.metric.name,
            "daily_limit": config.competition.daily_limit,
            "id_column": config.submission.id_column,
            "target_column": config.submission.target_column,
            "root": competition.root,
        }
        if not replace_key:  # refuse before the data is rebuilt, not after
            board.check_registration(
                competition.name, answers_change=manifest.exists() and not same_limit, **key
            )
        answers = build_digits(competition.data_dir, limit=limit)
        board.register(competition.name, answers, replace=replace_key, **key)
    return {
        "source": f"example:{example}",
        "data_dir": str(competition.data_dir),
        "answer_key": str(board.path),
        "skipped": False,
    }
