"""The runs ledger: one row per run and one per submission, in runs/ledger.sqlite.

It lives in the competition folder beside the runs it describes (unlike the local leaderboard's
answer key, it holds nothing a model must not see). Every row can be rebuilt from runs/<run>/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
from pathlib import Path

import pandas as pd

from kit.competition import Competition
from kit.errors import KitError
from kit.run import Run, known_runs
from kit.workbench.track import track_scores

SCHEMA = """
create table if not exists runs (
    run text primary key, model text, metric text, cv real, cv_std real, folds text,
    epochs integer, best_epochs text, seconds real, git_commit text, folds_hash text,
    started_at text, complete integer, sweep text
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
        if "sweep" not in {r[1] for r in connection.execute("pragma table_info(runs)")}:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                connection.execute("alter table runs add column sweep text")  # pre-sweep ledger
        with connection:  # one transaction: all of a record or none of it
            yield connection
    finally:
        connection.close()


def record_run(competition: Competition, run: str) -> dict:
    """Insert or refresh the run's row from runs/<run>/run.json, config.toml and metrics.json."""
    opened = competition.run(run)
    info, metrics, config = opened.info, opened.metrics, opened.config
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
        "sweep": _sweep_name(opened.dir),  # the `kit sweep` study whose trial this run is, or None
    }
    with connect(competition) as db:
        db.execute(
            f"insert or replace into runs ({', '.join(row)}) values ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    return row


def _sweep_name(run_dir: Path) -> str | None:
    path = run_dir / "sweep.json"  # written by kit.workbench.sweep for each trial's run
    return json.loads(path.read_text()).get("sweep") if path.exists() else None


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

    for run in runs:  # TensorBoard, MLflow: the LB score beside the run's CV
        track_scores(competition, run, {"lb/public": public_score})


def list_runs(competition: Competition):
    """A DataFrame: one row per run, newest first, with its best public leaderboard score."""
    known = _known_runs(competition)
    for name in known_runs(competition):
        run = Run(competition, name)
        if name not in known and run.metrics_path.exists() and run.info_path.exists():
            record_run(competition, name)  # a run the ledger missed (copied in)
    with connect(competition) as db:
        rows = db.execute(
            "select r.run, r.model, r.metric, r.cv, r.cv_std, r.folds, r.epochs, r.seconds, "
            "r.git_commit, r.folds_hash, r.complete, r.sweep, max(s.public_score) as public, "
            "count(s.id) as submissions from runs r left join submissions s on s.run = r.run "
            "group by r.run order by r.started_at desc, r.run"
        ).fetchall()
    records = [dict(r) for r in rows]
    listed = {r["run"] for r in records}
    for record in records:
        record["state"] = run_state(competition, record["run"], record["complete"])
    for name in known_runs(competition):
        if name in listed:
            continue
        try:  # a run with no finished fold yet: not in the ledger, but the user must see it
            info = Run(competition, name).info
        except KitError:
            info = {}
        records.append(
            {
                "run": name,
                "model": info.get("model"),
                "metric": None,
                "cv": None,
                "cv_std": None,
                "folds": "[]",
                "epochs": None,
                "seconds": None,
                "git_commit": info.get("git_commit"),
                "folds_hash": info.get("folds_hash"),
                "complete": 0,
                "sweep": None,
                "public": None,
                "submissions": 0,
                "state": run_state(competition, name, False),
            }
        )
    return pd.DataFrame(records)


def run_state(competition: Competition, run: str, complete) -> str:
    """finished, training, interrupted (`kit train --resume`) or failed (kit/run.py RunState)."""
    return Run(competition, run).state(bool(complete)).value


def _known_runs(competition: Competition) -> set[str]:
    with connect(competition) as db:
        return {r["run"] for r in db.execute("select run from runs")}


def show_run(competition: Competition, run: str) -> dict:
    """Everything about one run: its ledger row, metrics.json, and its submissions."""
    opened = competition.run(run)
    if run not in _known_runs(competition):
        if not opened.metrics_path.exists():
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
    metrics = opened.metrics
    info = opened.info if opened.info_path.exists() else {}
    report = opened.report_path
    return {
        **row,
        "task": info.get("task"),
        "cv_tta": metrics.get("cv_tta"),
        "tta": metrics.get("tta", []),
        "folds": json.loads(row["folds"]),
        "best_epochs": json.loads(row["best_epochs"]),
        "fold_scores": metrics.get("folds", []),
        "per_class": metrics.get("per_class", {}),
        "missing_folds": metrics.get("missing_folds", []),
        "submissions": submissions,
        "report": str(report) if report.exists() else None,
        "run_dir": str(opened.dir),
    }


# ----------------------------------------------------------------------------- console formatting

TABLE_WIDTH = 100  # `kit runs` fits a 100-column terminal
SCORE_DIGITS = 5  # every score kit prints (runs, submit, leaderboard) has 5 decimals


def format_score(value) -> str:
    """A score as every table and message prints it: 5 decimals, or '-' when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{SCORE_DIGITS}f}"


def format_seconds(seconds) -> str:
    """41s, 2m55s, 1h02m: a duration at a glance."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_runs_table(frame, width: int = TABLE_WIDTH) -> str:
    """The ledger as `kit runs` prints it: one line per run within `width` columns; the metric
    goes in the header when every run shares it."""
    metrics = frame["metric"].dropna().unique().tolist()
    shared_metric = metrics[0] if len(metrics) == 1 else None

    def folds_cell(row) -> str:
        folds = json.loads(row["folds"]) if isinstance(row["folds"], str) else row["folds"]
        count = len(folds or [])
        return str(count) if row["complete"] else f"{count} part"

    columns = [
        ("run", [str(v) for v in frame["run"]], "<", 24),
        ("model", [str(v) for v in frame["model"]], "<", 20),
    ]
    if shared_metric is None:
        columns.append(("metric", [str(v) for v in frame["metric"]], "<", 12))
    columns += [
        ("CV", [format_score(v) for v in frame["cv"]], ">", 8),
        ("± std", [format_score(v) for v in frame["cv_std"]], ">", 8),
        ("folds", [folds_cell(row) for _, row in frame.iterrows()], ">", 6),
        ("ep", [str(int(v)) if v == v else "-" for v in frame["epochs"]], ">", 4),
        ("time", [format_seconds(v) for v in frame["seconds"]], ">", 7),
        ("commit", [str(v or "-")[:7] for v in frame["git_commit"]], "<", 7),
        ("LB", [format_score(v) for v in frame["public"]], ">", 8),
        ("subs", [str(int(v)) for v in frame["submissions"]], ">", 4),
    ]
    known = {
        "run",
        "model",
        "metric",
        "cv",
        "cv_std",
        "folds",
        "epochs",
        "seconds",
        "git_commit",
        "folds_hash",
        "complete",
        "public",
        "submissions",
    }
    for extra in [c for c in frame.columns if c not in known]:  # e.g. a sweep column
        columns.append((extra, ["" if v is None else str(v) for v in frame[extra]], "<", 12))

    widths = [
        min(cap, max(len(name), *(len(v) for v in values))) for name, values, _, cap in columns
    ]
    # text columns (names, metric, extras) give way, widest first, until the line fits
    numeric = {"CV", "± std", "folds", "ep", "time", "commit", "LB", "subs"}
    shrinkable = [i for i, column in enumerate(columns) if column[0] not in numeric]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(shrinkable, key=lambda i: widths[i])
        if widths[widest] <= 6:
            break
        widths[widest] -= 1

    def cell(text: str, size: int, align: str) -> str:
        text = text if len(text) <= size else text[: size - 1] + "…"
        return f"{text:{align}{size}}"

    lines = []
    if shared_metric is not None:
        lines.append(f"metric: {shared_metric}")
    lines.append("  ".join(cell(c[0], w, c[2]) for c, w in zip(columns, widths, strict=True)))
    for i in range(len(frame)):
        lines.append(
            "  ".join(cell(c[1][i], w, c[2]) for c, w in zip(columns, widths, strict=True))
        )
    return "\n".join(line.rstrip() for line in lines)


def format_run(details: dict) -> str:
    """`kit runs show`: one run as a readable summary (the blob is `kit runs show --json`)."""
    lines = [
        f"run {details['run']}: {details.get('model')} ({details.get('task') or 'task ?'})",
        f"CV {details['metric']} {format_score(details['cv'])} ± "
        f"{format_score(details.get('cv_std'))}"
        + ("" if details.get("complete", 1) else f"  (folds missing: {details['missing_folds']})"),
    ]
    if details.get("cv_tta") is not None:
        lines.append(
            f"CV with TTA {format_score(details['cv_tta'])} (views {', '.join(details['tta'])})"
        )
    lines.append(
        f"epochs {details.get('epochs')}, trained in {format_seconds(details.get('seconds'))}, "
        f"commit {(details.get('git_commit') or '-')[:12]}, started {details.get('started_at')}"
    )
    lines += ["", "fold  score    best epoch"]
    best = details.get("best_epochs") or []
    for k, (fold, score) in enumerate(zip(details["folds"], details["fold_scores"], strict=False)):
        epoch = best[k] if k < len(best) else "-"
        lines.append(f"{fold:>4}  {format_score(score)}  {epoch:>10}")
    per_class = details.get("per_class") or {}
    if per_class:
        what = (
            "recall at threshold 0.5 per label (share of its positives predicted positive)"
            if details.get("task") == "multilabel"
            else "recall per class (share of its images given that class)"
        )
        lines += ["", f"{what}:"]
        width = min(max(len(str(c)) for c in per_class), 30)
        cells = [f"{str(c)[:width]:<{width}} {format_score(v)}" for c, v in per_class.items()]
        per_line = max(1, (TABLE_WIDTH + 1) // (width + 11))  # as many as fit in 100 columns
        for start in range(0, len(cells), per_line):
            lines.append("  " + "   ".join(cells[start : start + per_line]))
    submissions = details.get("submissions") or []
    lines += ["", f"submissions: {len(submissions) or 'none yet'}"]
    for row in submissions:
        lines.append(
            f"  {row['submitted_at']}  {row['platform']:<7} public "
            f"{format_score(row['public_score'])}  {row['file']}"
        )
    lines.append(f"report: {details.get('report') or 'not written'}")
    return "\n".join(lines)
