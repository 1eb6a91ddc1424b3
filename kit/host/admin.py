"""The host's side of `kit host`: make a hosted competition, manage teams, freeze, reveal,
rescore and export. Plain functions over kit.host.store, so a notebook can run a competition too.

HOSTDIR holds:
  host.sqlite          the database (0600), unless --db names a PostgreSQL server
  host.json            the --db URL given at init (0600), so every later command finds it
  pages/*.md           overview, data and rules pages, Markdown the host edits
  public/              what participants may download: the data bundle and sample_submission.csv
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.download import download
from kit.data.layout import competition_task, read_train_items
from kit.errors import DataError, KitError
from kit.fileio import atomic_open, write_csv, write_text
from kit.host import auth, scoring
from kit.host.store import CONFIG_NAME, Store, database_url, now_iso
from kit.metrics import get_metric
from kit.platforms.local import leaderboard_path
from kit.scaffold import new_competition

STATES = ("open", "frozen", "revealed")
BUNDLE_NAME = "data.zip"  # in HOSTDIR/public: the participant's data/ folder, no answer key
DEFAULT_FINALS = 2  # final selections per team, as Kaggle's default
PUBLIC_FRACTION = 0.5  # --split: the share of test rows scored on the public board
HOST_TEAM = "host"  # the host's own login (host pages); never on the leaderboard


def open_store(hostdir: Path, db: str | None = None) -> Store:
    hostdir = Path(hostdir)
    if (
        db is None
        and not (hostdir / CONFIG_NAME).exists()
        and not (hostdir / "host.sqlite").exists()
    ) and not os.environ.get("KIT_HOST_DB"):
        raise KitError(
            f"{hostdir} is not a hosted competition: `kit host init {hostdir} --from DIR`"
        )
    return Store.open(hostdir, db)


def settings(store: Store) -> dict:
    values = store.get_meta()
    if "name" not in values:
        raise KitError("the database holds no hosted competition: run `kit host init` first")
    return values


def state(values: dict) -> str:
    """open, frozen or revealed; an open competition before its start or past its end counts
    as frozen (start and end are stored as UTC ISO times, so text order is time order)."""
    current = values.get("state", "open")
    now = now_iso()
    if current == "open" and (
        (values.get("end") and now >= values["end"])
        or (values.get("start") and now < values["start"])
    ):
        return "frozen"
    return current


def utc_time(text: str, option: str) -> str:
    """An ISO date or time as stored: UTC, milliseconds; a time without a zone is UTC."""
    if not text:
        return ""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise KitError(f"{option} {text!r}: write an ISO time, e.g. 2026-12-08T17:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


# init -----------------------------------------------------------------------------------------
def init_host(
    hostdir: Path,
    source: Path,
    *,
    solution: Path | None = None,
    split: bool = False,
    seed: int = 0,
    db: str | None = None,
    daily_limit: int | None = None,
    finals: int | None = None,
    team_size: int = 1,
    start: str = "",
    end: str = "",
) -> dict:
    """Make a hosted competition from a kit competition folder; return the host's token (once).

    The answer key is solution (id, target, Usage) or the one `kit download` registered for
    the folder in $KIT_HOME/leaderboard.sqlite; split assigns Public/Private afresh, seeded and
    stratified by label.
    """
    hostdir = Path(hostdir)
    start, end = utc_time(start, "--start"), utc_time(end, "--end")
    competition = Competition.load(source)
    config = competition.config
    scoring.check_metric(config.metric.name)
    sample_path = competition.path(config.data.sample_submission)
    if not sample_path.exists():
        raise DataError(f"{sample_path} not found: run `kit download -C {competition.root}` first")
    url = database_url(hostdir, db)
    hostdir.mkdir(parents=True, exist_ok=True)
    os.chmod(hostdir, 0o700)
    store = Store(url)
    try:
        if "name" in store.get_meta():
            raise KitError(f"{hostdir} already hosts a competition: use another HOSTDIR")
        key = _answer_key(competition, solution, split=split, seed=seed)
        sample = pd.read_csv(sample_path, dtype=str)
        sample_ids = set(sample[config.submission.id_column])
        if set(key["id"]) != sample_ids:
            raise DataError(
                f"the answer key's ids differ from {sample_path.name}'s "
                f"({len(set(key['id']) ^ sample_ids)} differ): pass the solution of this test set"
            )
        _, task = competition_task(competition, read_train_items(competition))
        public = hostdir / "public"
        public.mkdir(exist_ok=True)
        shutil.copyfile(sample_path, public / "sample_submission.csv")
        _write_bundle(competition.data_dir, public / BUNDLE_NAME, exclude=solution)
        values = {
            "name": competition.name,
            "title": competition.name,
            "metric": config.metric.name,
            "greater_is_better": get_metric(config.metric.name).greater_is_better,
            "daily_limit": daily_limit
            if daily_limit is not None
            else config.competition.daily_limit,
            "max_finals": finals or DEFAULT_FINALS,
            "team_size": team_size,
            "start": start,
            "end": end,
            "state": "open",
            "id_column": config.submission.id_column,
            "target_column": config.submission.target_column,
            "format": config.submission.format,
            "classes": [str(c) for c in task.classes],
            "secret": auth.new_secret(),
            "answers_version": 1,
        }
        store.replace_answers(key.to_dict("records"))
        store.set_meta(values)
        token = auth.new_token()
        store.add_team(HOST_TEAM, auth.hash_token(token), [], role="host")
        if db:
            with atomic_open(hostdir / CONFIG_NAME) as handle:
                os.chmod(handle.name, 0o600)
                handle.write(json.dumps({"db": db}) + "\n")
        _write_pages(hostdir, competition, values)
        counts = key["usage"].value_counts()
        return {
            "hostdir": str(hostdir),
            "host_token": token,
            "public_rows": int(counts.get("Public", 0)),
            "private_rows": int(counts.get("Private", 0)),
            "database": store.engine.url.render_as_string(hide_password=True),
        }
    finally:
        store.close()


def _answer_key(competition, solution: Path | None, *, split: bool, seed: int) -> pd.DataFrame:
    config = competition.config.submission
    if solution is not None:
        frame = pd.read_csv(solution, dtype=str, keep_default_na=False)
        needed = [config.id_column, config.target_column] + ([] if split else ["Usage"])
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            hint = " (or --split to make the Public/Private split)" if missing == ["Usage"] else ""
            raise DataError(f"{solution}: missing column(s) {', '.join(missing)}{hint}")
        key = pd.DataFrame({"id": frame[config.id_column], "target": frame[config.target_column]})
        key["usage"] = frame["Usage"].str.capitalize() if "Usage" in frame.columns else "Public"
    else:
        key = _registered_key(competition.name)
    if split:
        key["usage"] = _stratified_split(key["target"].to_numpy(), seed)
    bad = sorted(set(key["usage"]) - {"Public", "Private"})
    if bad:
        raise DataError(f"Usage must be Public or Private; found {', '.join(bad)} (or use --split)")
    return key.astype(str)


def _registered_key(name: str) -> pd.DataFrame:
    path = leaderboard_path()
    if not path.exists():
        raise DataError(
            f"no answer key for {name!r} in {path}: run `kit download` or pass --solution FILE"
        )
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:  # read-only
        rows = connection.execute(
            "SELECT id, target, usage FROM answers WHERE competition = ? ORDER BY id", (name,)
        ).fetchall()
    if not rows:
        raise DataError(f"no answer key for {name!r} in {path}: pass --solution FILE")
    return pd.DataFrame(rows, columns=["id", "target", "usage"])


def _stratified_split(targets: np.ndarray, seed: int) -> np.ndarray:
    """Half of each label's rows Public, half Private, shuffled with seed."""
    rng = np.random.default_rng(seed)
    usage = np.empty(len(targets), dtype=object)
    for label in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == label))
        cut = int(round(len(rows) * PUBLIC_FRACTION))
        usage[rows[:cut]], usage[rows[cut:]] = "Public", "Private"
    return usage


def _write_bundle(data_dir: Path, target: Path, *, exclude: Path | None) -> None:
    """Zip data/ for participants: every file but a solution file (the answer key never ships)."""
    excluded = Path(exclude).resolve() if exclude else None
    with (
        atomic_open(target, "wb") as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for path in sorted(data_dir.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            if path.resolve() == excluded or "solution" in path.name.lower():
                continue
            archive.write(path, path.relative_to(data_dir).as_posix())


def _sections(readme: str) -> dict[str, str]:
    parts = re.split(r"^## ", readme, flags=re.M)
    return {part.splitlines()[0].strip().lower(): "## " + part for part in parts[1:]}


def _write_pages(hostdir: Path, competition, values: dict) -> None:
    readme_path = competition.root / "README.md"
    readme = readme_path.read_text() if readme_path.exists() else ""
    sections = _sections(readme)
    problem = next((v for k, v in sections.items() if k.startswith("the problem")), readme)
    data = next((v for k, v in sections.items() if k.startswith("data")), "## Data description\n")
    pages = hostdir / "pages"
    pages.mkdir(exist_ok=True)
    write_text(pages / "overview.md", f"# {values['title']}\n\n{problem.strip()}\n")
    files = "\n".join(
        f"- `{p.relative_to(competition.data_dir).as_posix()}`"
        for p in sorted(competition.data_dir.iterdir())
    )
    write_text(
        pages / "data.md",
        f"{data.strip()}\n\nThe download (`{BUNDLE_NAME}`, or `kit download`) holds:\n\n{files}\n",
    )
    write_text(pages / "rules.md", rules_markdown(values))


def rules_markdown(values: dict) -> str:
    direction = "higher" if values["greater_is_better"] else "lower"
    lines = [
        "## Rules",
        "",
        f"- **Metric**: `{values['metric']}` ({direction} is better), on the column "
        f"`{values['target_column']}` ({values['format']}).",
        f"- **Daily limit**: {values['daily_limit']} submissions per team per UTC day; an invalid "
        "file does not count.",
        f"- **Team size**: at most {values['team_size']} member(s).",
        f"- **Final selections**: up to {values['max_finals']}; the private leaderboard ranks each "
        "team by the best private score among them (by default, its best public submission).",
        f"- **Start**: {values['start'] or 'now'}; **end**: {values['end'] or 'when the host freezes'}"
        " (UTC).",
        "- The public leaderboard scores part of the test set; the rest decides the final ranking "
        "and is revealed at the end. Each public score carries a bootstrap 90% interval.",
    ]
    return "\n".join(lines) + "\n"


# teams ----------------------------------------------------------------------------------------
def _check_team(store: Store, name: str, members: list[str]) -> str:
    name = name.strip()
    if not re.fullmatch(r"[\w .@+-]{1,100}", name) or name == HOST_TEAM:
        raise KitError(f"team name {name!r}: use 1-100 letters, digits, spaces or . _ @ + -")
    size = settings(store)["team_size"]
    if len(members) > size:
        raise KitError(f"team {name!r} has {len(members)} members; the team size is {size}")
    if store.team_by_name(name) is not None:
        raise KitError(
            f"team {name!r} already exists: pick another name, or `kit host team rotate`"
        )
    return name


def add_team(hostdir: Path, name: str, members: list[str] = (), *, db: str | None = None) -> str:
    """Make a team; return its token (shown once: only its hash is stored)."""
    store = open_store(hostdir, db)
    try:
        name = _check_team(store, name, list(members))
        token = auth.new_token()
        store.add_team(name, auth.hash_token(token), list(members))
        return token
    finally:
        store.close()


def import_teams(hostdir: Path, roster: Path, out: Path, *, db: str | None = None) -> int:
    """Teams from a roster CSV (columns team, email; one row per member); write team,token.
    Every team is checked before any is made, so a bad row leaves no tokens unrecorded."""
    frame = pd.read_csv(roster, dtype=str, keep_default_na=False)
    if "team" not in frame.columns:
        raise DataError(f"{roster}: needs a 'team' column (and 'email', one row per member)")
    emails = frame["email"] if "email" in frame.columns else pd.Series([""] * len(frame))
    groups: dict[str, list[str]] = {}
    for team, email in zip(frame["team"], emails, strict=True):
        groups.setdefault(team.strip(), []).extend([email.strip()] if email.strip() else [])
    store = open_store(hostdir, db)
    try:
        for team, members in groups.items():
            _check_team(store, team, members)
        rows = []
        for team, members in groups.items():
            token = auth.new_token()
            store.add_team(team, auth.hash_token(token), members)
            rows.append({"team": team, "token": token})
    finally:
        store.close()
    with atomic_open(Path(out)) as handle:
        os.chmod(handle.name, 0o600)  # tokens: for the host's eyes until handed out
        writer = csv.DictWriter(handle, fieldnames=["team", "token"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def revoke_team(hostdir: Path, name: str, *, db: str | None = None) -> None:
    store = open_store(hostdir, db)
    try:
        store.set_token_hash(name, None)
    finally:
        store.close()


def rotate_team(hostdir: Path, name: str, *, db: str | None = None) -> str:
    """A new token for the team; the old one and its sessions stop working."""
    store = open_store(hostdir, db)
    try:
        token = auth.new_token()
        store.set_token_hash(name, auth.hash_token(token))
        return token
    finally:
        store.close()


# state ----------------------------------------------------------------------------------------
def set_state(hostdir: Path, new_state: str, *, db: str | None = None) -> str:
    if new_state not in STATES:
        raise KitError(f"state {new_state!r}: use one of {', '.join(STATES)}")
    store = open_store(hostdir, db)
    try:
        settings(store)
        store.set_meta({"state": new_state})
        return new_state
    finally:
        store.close()


def add_baseline(
    hostdir: Path, file: Path, *, name: str = "baseline", message: str = "", db: str | None = None
) -> dict:
    """Score a host baseline: a marked leaderboard row, outside the daily limit."""
    store = open_store(hostdir, db)
    try:
        values = settings(store)
        team = store.team_by_name(name)
        if team is None:
            team_id = store.add_team(name, None, [], role="baseline")
        elif team["role"] != "baseline":
            raise KitError(f"{name!r} is a participant team: name the baseline otherwise")
        else:
            team_id = team["id"]
        data = Path(file).read_bytes()
        rules = scoring.Rules.from_meta(values, hostdir)
        scores = scoring.check_and_score(
            data, rules, scoring.AnswerKey(store.read_answers()), Path(hostdir) / "scratch"
        )
        row, _ = store.add_submission(
            {
                "team_id": team_id,
                "submitted_at": now_iso(),
                "message": message or name,
                "file_name": Path(file).name,
                "content": data,
                **scores,
            },
            daily_limit=None,
        )
        return row
    finally:
        store.close()


def rescore(hostdir: Path, *, solution: Path | None = None, db: str | None = None) -> int:
    """Score every stored submission again (after the host fixed the answer key)."""
    store = open_store(hostdir, db)
    try:
        values = settings(store)
        if solution is not None:
            frame = pd.read_csv(solution, dtype=str, keep_default_na=False)
            id_column, target = values["id_column"], values["target_column"]
            missing = [c for c in (id_column, target, "Usage") if c not in frame.columns]
            if missing:
                raise DataError(f"{solution}: missing column(s) {', '.join(missing)}")
            rows = [
                {"id": i, "target": t, "usage": u.capitalize()}
                for i, t, u in zip(frame[id_column], frame[target], frame["Usage"], strict=True)
            ]
            sample = pd.read_csv(Path(hostdir) / "public" / "sample_submission.csv", dtype=str)
            differ = set(frame[id_column]) ^ set(sample[id_column])
            if differ:
                raise DataError(
                    f"{solution}: {len(differ)} id(s) differ from sample_submission.csv's: "
                    "the corrected key must cover the same test set"
                )
            store.replace_answers(rows)
            store.set_meta({"answers_version": values.get("answers_version", 1) + 1})
        rules = scoring.Rules.from_meta(values, hostdir)
        key = scoring.AnswerKey(store.read_answers())
        scores = {
            row["id"]: scoring.score(row["content"], rules, key)
            for row in store.all_submissions(with_content=True)
        }
        store.set_scores(scores)
        return len(scores)
    finally:
        store.close()


# standings ------------------------------------------------------------------------------------
def standings(store: Store, values: dict, *, private: bool) -> list[dict]:
    """One row per team (and baseline), best first. private adds each team's private score (its
    final selections' best, else its best public submission's), private rank and rank change."""
    better_high = values["greater_is_better"]
    rows = [
        r for r in store.all_submissions() if r["role"] != "host" and r["public_score"] is not None
    ]

    def order(score):  # sort key: best first
        return -score if better_high else score

    by_team: dict[str, list[dict]] = {}
    for row in rows:
        by_team.setdefault(row["team"], []).append(row)
    table = []
    for team, entries in by_team.items():
        best = min(entries, key=lambda r: (order(r["public_score"]), r["id"]))
        line = {
            "team": team,
            "baseline": entries[0]["role"] == "baseline",
            "public_score": best["public_score"],
            "public_low": best["public_low"],
            "public_high": best["public_high"],
            "entries": len(entries),
            "last": max(r["submitted_at"] for r in entries),
            "_best_id": best["id"],
            "_first": best["id"],
        }
        if private:
            chosen = [r for r in entries if r["final"]] or [best]
            pick = min(chosen, key=lambda r: (order(r["private_score"]), r["id"]))
            line.update(
                private_score=pick["private_score"],
                _private_id=pick["id"],
                selected=[r["id"] for r in chosen],
            )
        table.append(line)
    _rank(table, "public_score", "rank", order)
    if private:
        _rank(table, "private_score", "private_rank", order)
        for line in table:
            if line["rank"] is not None:
                line["rank_change"] = line["rank"] - line["private_rank"]
        table.sort(key=lambda r: (order(r["private_score"]), r["_first"]))
    else:
        table.sort(key=lambda r: (order(r["public_score"]), r["_first"]))
    return table


def _rank(table: list[dict], score: str, field: str, order) -> None:
    """Ranks among teams (baselines are shown in place, unranked); ties go to the earlier entry."""
    ranked = sorted(
        (r for r in table if not r["baseline"]), key=lambda r: (order(r[score]), r["_first"])
    )
    for place, row in enumerate(ranked, start=1):
        row[field] = place
    for row in table:
        row.setdefault(field, None)


BOARD_FIELDS = (
    "rank",
    "team",
    "public_score",
    "public_low",
    "public_high",
    "entries",
    "last",
    "baseline",
)
REVEALED_FIELDS = ("private_rank", "private_score", "rank_change")  # only after the reveal


def public_view(row: dict) -> dict:
    """A leaderboard row as participants may see it, in a fixed column order."""
    fields = BOARD_FIELDS + (REVEALED_FIELDS if "private_score" in row else ())
    return {field: row.get(field) for field in fields}


def standings_frame(store: Store) -> pd.DataFrame:
    """The final standings for grading: each team's chosen submission and both scores."""
    table = standings(store, settings(store), private=True)
    members = {t["name"]: json.loads(t["members"]) for t in store.list_teams()}
    return pd.DataFrame(
        [
            {
                "private_rank": r["private_rank"],
                "team": r["team"],
                "members": ";".join(members.get(r["team"], [])),
                "baseline": r["baseline"],
                "private_score": r["private_score"],
                "public_rank": r["rank"],
                "public_score": r["public_score"],
                "submission_id": r["_private_id"],
                "selected": ";".join(map(str, r["selected"])),
                "entries": r["entries"],
            }
            for r in table
        ],
        columns=[
            "private_rank",
            "team",
            "members",
            "baseline",
            "private_score",
            "public_rank",
            "public_score",
            "submission_id",
            "selected",
            "entries",
        ],
    )


def export(hostdir: Path, out: Path | None = None, *, db: str | None = None) -> Path:
    """Write the final standings CSV (default HOSTDIR/standings.csv); return its path."""
    store = open_store(hostdir, db)
    try:
        frame = standings_frame(store)
    finally:
        store.close()
    return write_csv(Path(out) if out else Path(hostdir) / "standings.csv", frame)


DEMO_TEAMS = ("team-a", "team-b", "team-c")


def make_demo(folder: Path, *, limit: int | None = None) -> dict:
    """The digits competition hosted under folder with three teams and a baseline (fresh tokens
    on every call; an existing demo is reused)."""
    folder = Path(folder)
    root = folder / "competitions" / "digits"
    competition = (
        Competition.load(root)
        if root.exists()
        else new_competition("digits", folder / "competitions", example="digits")
    )
    download(competition, limit=limit, progress=False, replace_key=True)
    hostdir = folder / "host"
    tokens = {}
    if not (hostdir / "host.sqlite").exists():
        tokens[HOST_TEAM] = init_host(hostdir, root, daily_limit=10)["host_token"]
        for team in DEMO_TEAMS:
            tokens[team] = add_team(hostdir, team, [f"{team}@example.org"])
        add_baseline(
            hostdir,
            competition.path(competition.config.data.sample_submission),
            name="all-zeros baseline",
            message="every image is a 0",
        )
    else:
        for team in (HOST_TEAM, *DEMO_TEAMS):
            tokens[team] = rotate_team(hostdir, team)
    return {"hostdir": str(hostdir), "competition": str(root), "tokens": tokens}
