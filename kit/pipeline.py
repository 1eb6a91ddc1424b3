"""`kit run`: every stage of the loop in order. Data already current is not fetched again and an
existing folds.csv is kept; training, prediction, the blend and the submission always run."""

from __future__ import annotations

import time

from kit.competition import Competition
from kit.data.download import download
from kit.data.folds import make_folds
from kit.errors import LimitError
from kit.infer.ensemble import ensemble_runs
from kit.infer.predict import predict_run
from kit.platforms import submit as submit_file
from kit.progress import duration
from kit.train.cv import train_run


def run_all(
    competition: Competition,
    *,
    run: str | None = None,
    message: str = "",
    submit: bool = True,
    progress: bool = True,
    echo=print,
) -> dict:
    """download -> folds -> train -> predict (TTA) -> ensemble -> validate -> submit."""
    started = time.time()
    summary: dict = {"competition": str(competition.root)}
    got = download(competition)
    echo(f"data: {got['data_dir']}" + (" (current)" if got.get("skipped") else " (built)"))
    if not competition.folds_csv.exists():
        make_folds(competition)
    echo(f"folds: {competition.folds_csv}")
    trained = train_run(competition, run, progress=progress)
    run = trained["run"]
    echo(f"trained {run}: CV {trained['metric']} {trained['cv']:.4f} ± {trained['cv_std']:.4f}")
    predicted = predict_run(competition, run, progress=progress)
    echo(f"predicted with TTA {predicted['tta']}: CV {predicted['cv_tta']:.4f}")
    blended = ensemble_runs(competition, [run], name=run)
    summary.update(
        run=run,
        run_dir=trained["run_dir"],
        metric=trained["metric"],
        cv=trained["cv"],
        cv_tta=predicted["cv_tta"],
        submission=blended["submission"],
    )
    echo(f"submission: {blended['submission']} (valid)")
    if submit:
        try:
            result = submit_file(competition, blended["submission"], message or f"kit run {run}")
        except LimitError as error:  # everything else is done; the file can be submitted later
            echo(f"not submitted: {error}")
        else:
            summary["public_score"] = result.get("public_score")
            echo(f"submitted: public leaderboard score {result.get('public_score')}")
    summary["seconds"] = round(time.time() - started, 1)
    return summary


def format_summary(summary: dict) -> str:
    """The end of `kit run` for a person: scores, where the files are, how long it took."""
    lines = [
        f"done in {duration(summary['seconds'])}: run {summary['run']}, CV {summary['metric']} "
        f"{summary['cv']:.4f} (with TTA {summary['cv_tta']:.4f})"
    ]
    if summary.get("public_score") is not None:
        lines.append(f"  public leaderboard: {summary['public_score']}")
    lines.append(f"  submission: {summary['submission']}")
    lines.append(f"  run folder: {summary['run_dir']} (report.html, oof.csv, test.csv)")
    return "\n".join(lines)
