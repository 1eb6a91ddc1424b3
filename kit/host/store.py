"""The host's one SQL layer (SQLAlchemy Core): SQLite in WAL mode by default, PostgreSQL by URL.

Everything the server knows lives here, so several server processes behind a proxy agree: the
competition's settings (`meta`), the answer key, teams (token hashes only), submissions with the
uploaded file (rescore needs it), the daily quota counters and failed logins.

The daily limit is exact under concurrency because a submission is stored in the same
transaction as a conditional `UPDATE quota SET used = used + 1 WHERE used < limit`: a row lock
(PostgreSQL) or the single writer (SQLite) lets exactly `limit` of those succeed per team and day.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from kit.errors import ConfigError, KitError

DB_NAME = "host.sqlite"  # in HOSTDIR, mode 0600
CONFIG_NAME = "host.json"  # in HOSTDIR, mode 0600: the database URL when it is not the default
SQLITE_BUSY_MS = 30_000  # a writer waits this long for the write lock before failing

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
answers = Table(
    "answers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("target", Text, nullable=False),
    Column("usage", String(7), nullable=False),  # Public or Private, as Kaggle's solution files
)
teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("members", Text, nullable=False, default="[]"),  # JSON list of e-mail addresses
    Column("token_hash", String(64), unique=True),  # sha256 of the token; NULL when revoked
    Column("role", String(10), nullable=False, default="team"),  # team, baseline or host
    Column("created_at", String(32), nullable=False),
)
submissions = Table(
    "submissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("team_id", Integer, ForeignKey("teams.id"), nullable=False, index=True),
    Column("submitted_at", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("file_name", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("idempotency_key", String(200)),
    Column("public_score", Float),
    Column("public_low", Float),  # bootstrap 90% interval of the public score
    Column("public_high", Float),
    Column("private_score", Float),
    Column("final", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=False),  # the upload, so rescore can score it again
    UniqueConstraint("team_id", "idempotency_key", name="one_per_key"),
)
quota = Table(
    "quota",
    metadata,
    Column("team_id", Integer, ForeignKey("teams.id"), primary_key=True),
    Column("day", String(10), primary_key=True),  # UTC date, as Kaggle counts the daily limit
    Column("used", Integer, nullable=False),
)
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),  # unix seconds
)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def database_url(hostdir: Path, db: str | None = None) -> str:
    """The URL to use: --db, then $KIT_HOST_DB, then HOSTDIR/host.json, then HOSTDIR/host.sqlite."""
    if db:
        return db
    if os.environ.get("KIT_HOST_DB"):
        return os.environ["KIT_HOST_DB"]
    config = Path(hostdir) / CONFIG_NAME
    if config.exists():
        saved = json.loads(config.read_text()).get("db")
        if saved:
            return saved
    return f"sqlite:///{(Path(hostdir) / DB_NAME).resolve()}"


def _normalise(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver kit[host] installs; SQLAlchemy's default would be psycopg2
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith(("sqlite:", "postgresql+")):
        raise ConfigError(f"--db {url.split('://')[0]}://...: use postgresql://... or leave it out")
    return url


def make_engine(url: str) -> Engine:
    url = _normalise(url)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
        os.chmod(path, 0o600)  # tokens are hashed, but scores and uploads are still private
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class LimitReached(KitError):
    """The team's daily limit is used up (HTTP 429)."""


class Store:
    """Typed reads and writes over the host's tables; one engine, short transactions."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    @classmethod
    def open(cls, hostdir: Path, db: str | None = None) -> Store:
        return cls(database_url(hostdir, db))

    def close(self) -> None:
        self.engine.dispose()

    # settings ---------------------------------------------------------------------------------
    def set_meta(self, values: dict) -> None:
        with self.engine.begin() as connection:
            for key, value in values.items():
                text = json.dumps(value)
                done = connection.execute(update(meta).where(meta.c.key == key).values(value=text))
                if done.rowcount == 0:
                    connection.execute(insert(meta).values(key=key, value=text))

    def get_meta(self) -> dict:
        with self.engine.connect() as connection:
            rows = connection.execute(select(meta.c.key, meta.c.value)).all()
        return {key: json.loads(value) for key, value in rows}

    # answer key -------------------------------------------------------------------------------
    def replace_answers(self, rows: list[dict]) -> None:
        with self.engine.begin() as connection:
            connection.execute(answers.delete())
            connection.execute(insert(answers), rows)

    def read_answers(self) -> list[tuple[str, str, str]]:
        with self.engine.connect() as connection:
            query = select(answers.c.id, answers.c.target, answers.c.usage).order_by(answers.c.id)
            return [tuple(row) for row in connection.execute(query)]

    # teams ------------------------------------------------------------------------------------
    def add_team(self, name: str, token_hash: str, members: list[str], role: str = "team") -> int:
        try:
            with self.engine.begin() as connection:
                result = connection.execute(
                    insert(teams).values(
                        name=name,
                        members=json.dumps(members),
                        token_hash=token_hash,
                        role=role,
                        created_at=now_iso(),
                    )
                )
                return result.inserted_primary_key[0]
        except IntegrityError:
            raise KitError(
                f"team {name!r} already exists: pick another name, or `kit host team rotate`"
            ) from None

    def set_token_hash(self, name: str, token_hash: str | None) -> None:
        with self.engine.begin() as connection:
            done = connection.execute(
                update(teams).where(teams.c.name == name).values(token_hash=token_hash)
            )
        if done.rowcount == 0:
            raise KitError(f"no team {name!r}: `kit host team add HOSTDIR {name}` makes it")

    def team_by_token_hash(self, token_hash: str) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(teams).where(teams.c.token_hash == token_hash)).first()
        return dict(row._mapping) if row else None

    def team_by_id(self, team_id: int) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(teams).where(teams.c.id == team_id)).first()
        return dict(row._mapping) if row else None

    def team_by_name(self, name: str) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(teams).where(teams.c.name == name)).first()
        return dict(row._mapping) if row else None

    def list_teams(self) -> list[dict]:
        counts = (
            select(submissions.c.team_id, func.count().label("entries"))
            .group_by(submissions.c.team_id)
            .subquery()
        )
        query = (
            select(
                teams.c.id,
                teams.c.name,
                teams.c.members,
                teams.c.role,
                teams.c.created_at,
                (teams.c.token_hash.is_not(None)).label("active"),
                func.coalesce(counts.c.entries, 0).label("entries"),
            )
            .outerjoin(counts, counts.c.team_id == teams.c.id)
            .order_by(teams.c.id)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    # submissions ------------------------------------------------------------------------------
    def used_today(self, team_id: int, day: str | None = None) -> int:
        query = select(quota.c.used).where(
            quota.c.team_id == team_id, quota.c.day == (day or today())
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar() or 0

    def find_by_key(self, team_id: int, key: str) -> dict | None:
        query = select(*PUBLIC_COLUMNS).where(
            submissions.c.team_id == team_id, submissions.c.idempotency_key == key
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return dict(row._mapping) if row else None

    def add_submission(self, row: dict, *, daily_limit: int | None) -> tuple[dict, bool]:
        """Store a scored submission and charge the quota in one transaction.

        Returns (row, created); created is False when the Idempotency-Key was seen before (the
        earlier submission comes back and nothing is charged). Raises LimitReached.
        """
        team_id, day = row["team_id"], row["submitted_at"][:10]
        key = row.get("idempotency_key")
        if key:
            earlier = self.find_by_key(team_id, key)
            if earlier:
                return earlier, False
        if daily_limit is not None:
            self._ensure_quota_row(team_id, day)
        try:
            with self.engine.begin() as connection:
                if daily_limit is not None:
                    self._charge(connection, team_id, day, daily_limit)
                new_id = connection.execute(insert(submissions).values(**row)).inserted_primary_key[
                    0
                ]
        except IntegrityError:
            # the same key raced in from a retry, and the transaction (quota too) rolled back
            earlier = self.find_by_key(team_id, key) if key else None
            if earlier is None:
                raise
            return earlier, False
        return self.submission(new_id), True

    def _ensure_quota_row(self, team_id: int, day: str) -> None:
        """Create the day's counter at 0 unless it exists (racing creators both succeed)."""
        exists = select(quota.c.used).where(quota.c.team_id == team_id, quota.c.day == day)
        with self.engine.connect() as connection:
            if connection.execute(exists).first() is not None:
                return  # the usual case: a read, no write lock
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        statement = dialect_insert(quota).values(team_id=team_id, day=day, used=0)
        with self.engine.begin() as connection:
            connection.execute(statement.on_conflict_do_nothing())

    @staticmethod
    def _charge(connection, team_id: int, day: str, daily_limit: int) -> None:
        charged = connection.execute(
            update(quota)
            .where(quota.c.team_id == team_id, quota.c.day == day, quota.c.used < daily_limit)
            .values(used=quota.c.used + 1)
        ).rowcount
        if not charged:
            raise LimitReached(f"daily limit of {daily_limit} submissions reached")

    def submission(self, submission_id: int) -> dict | None:
        with self.engine.connect() as connection:
            query = select(*PUBLIC_COLUMNS).where(submissions.c.id == submission_id)
            row = connection.execute(query).first()
        return dict(row._mapping) if row else None

    def team_submissions(self, team_id: int, *, private: bool = False) -> list[dict]:
        """A team's own submissions, newest first; private scores only when asked (after reveal)."""
        columns = [*PUBLIC_COLUMNS, submissions.c.private_score] if private else PUBLIC_COLUMNS
        query = (
            select(*columns)
            .where(submissions.c.team_id == team_id)
            .order_by(submissions.c.id.desc())
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def all_submissions(self, *, with_content: bool = False) -> list[dict]:
        columns = [
            *PUBLIC_COLUMNS,
            submissions.c.private_score,
            teams.c.name.label("team"),
            teams.c.role,
        ]
        if with_content:
            columns.append(submissions.c.content)
        query = select(*columns).join(teams, teams.c.id == submissions.c.team_id)
        with self.engine.connect() as connection:
            return [
                dict(row._mapping) for row in connection.execute(query.order_by(submissions.c.id))
            ]

    def set_scores(self, scores: dict[int, dict]) -> None:
        with self.engine.begin() as connection:
            for submission_id, values in scores.items():
                connection.execute(
                    update(submissions).where(submissions.c.id == submission_id).values(**values)
                )

    def set_finals(self, team_id: int, ids: list[int]) -> None:
        with self.engine.begin() as connection:
            owned = (
                connection.execute(
                    select(submissions.c.id).where(
                        submissions.c.team_id == team_id, submissions.c.id.in_(ids)
                    )
                )
                .scalars()
                .all()
            )
            unknown = sorted(set(ids) - set(owned))
            if unknown:
                raise KitError(f"not your submission(s): {', '.join(map(str, unknown))}")
            connection.execute(
                update(submissions)
                .where(submissions.c.team_id == team_id)
                .values(final=submissions.c.id.in_(ids) if ids else False)
            )

    # login rate limit -------------------------------------------------------------------------
    def recent_failures(self, client: str, since: float) -> int:
        query = select(func.count()).where(
            login_failures.c.client == client, login_failures.c.at >= since
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar() or 0

    def record_failure(self, client: str, at: float, forget_before: float) -> None:
        with self.engine.begin() as connection:
            connection.execute(login_failures.delete().where(login_failures.c.at < forget_before))
            connection.execute(insert(login_failures).values(client=client, at=at))

    def integrity_check(self) -> str:
        """SQLite's PRAGMA integrity_check ("ok" when sound); PostgreSQL answers "ok" if reachable."""
        with self.engine.connect() as connection:
            if self.engine.dialect.name == "sqlite":
                return connection.exec_driver_sql("PRAGMA integrity_check").scalar()
            connection.exec_driver_sql("SELECT 1")
            return "ok"


# what a team may see of its own submission rows (never the upload, never the private score)
PUBLIC_COLUMNS = (
    submissions.c.id,
    submissions.c.team_id,
    submissions.c.submitted_at,
    submissions.c.message,
    submissions.c.file_name,
    submissions.c.sha256,
    submissions.c.idempotency_key,
    submissions.c.public_score,
    submissions.c.public_low,
    submissions.c.public_high,
    submissions.c.final,
)
