"""The runs ledger (runs/ledger.sqlite), `kit runs`, and each run's report.html."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kit.cli import cli
from kit.data.folds import make_folds
from kit.errors import KitError
from kit.ledger import ledger_path, list_runs, record_submission, show_run
from kit.report import label_errors
from kit.task import Task
from kit.train.cv import train_run


@pytest.fixture
def one_fold(tiny):
    make_folds(tiny)
    train_run(tiny, "r1", folds=[0], progress=False)
    return tiny


def test_runs_are_listed_with_their_leaderboard_scores(one_fold):
    competition = one_fold
    metrics = json.loads((competition.runs_dir / "r1" / "metrics.json").read_text())
    record_submission(competition, ["r1"], "submissions/a.csv", "local", 0.5)
    record_submission(competition, ["r1"], "submissions/b.csv", "local", 0.75)
    table = list_runs(competition)
    assert table["run"].tolist() == ["r1"]
    row = table.iloc[0]
    assert row["model"] == "test_resnet" and row["metric"] == "accuracy"
    assert row["cv"] == pytest.approx(metrics["cv"]) and row["epochs"] == 1
    assert (row["public"], row["submissions"], row["complete"]) == (0.75, 2, 0)
    info = json.loads((competition.runs_dir / "r1" / "run.json").read_text())
    assert row["folds_hash"] == info["folds_hash"] and row["git_commit"] == info["git_commit"]
    shown = show_run(competition, "r1")
    assert shown["folds"] == [0] and shown["missing_folds"] == [1, 2]
    assert [s["public_score"] for s in shown["submissions"]] == [0.5, 0.75]
    assert shown["report"].endswith("report.html")
    with sqlite3.connect(ledger_path(competition)) as db:  # stored in the competition folder
        assert db.execute("select count(*) from runs").fetchone() == (1,)
    with pytest.raises(KitError, match="run 'nope' not found.*r1"):
        show_run(competition, "nope")
    ledger_path(competition).unlink()  # lost: rebuilt from runs/<run>/, submissions aside
    assert list_runs(competition)["run"].tolist() == ["r1"]


def test_kit_runs_runs_show_and_the_report(one_fold):
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", "-C", str(one_fold.root)])
    assert listed.exit_code == 0, listed.output
    assert "r1" in listed.output and "test_resnet" in listed.output
    shown = runner.invoke(cli, ["runs", "-C", str(one_fold.root), "show", "r1", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["run"] == "r1"
    missing = runner.invoke(cli, ["runs", "-C", str(one_fold.root), "show", "nope"])
    assert missing.exit_code == 2 and "run 'nope' not found" in missing.output
    page = (one_fold.runs_dir / "r1" / "report.html").read_text()
    for heading in (
        "Learning curves",
        "Confusion matrix",
        "Per-class scores",
        "Likely label errors",
    ):
        assert f"<h2>{heading}" in page
    assert page.count("data:image/png;base64,") >= 3  # self-contained: plots and thumbnails inline
    assert "<script" not in page and "http" not in page


def test_label_errors_are_confident_disagreements_first():
    task = Task("multiclass", ("cat", "dog"))
    oof = pd.DataFrame(
        {"id": ["a", "b", "c", "d"], "p_cat": [0.9, 0.3, 0.6, 0.05], "p_dog": [0.1, 0.7, 0.4, 0.95]}
    )
    targets = np.array([1, 0, 1, 1])  # a, b and c disagree with their labels; d agrees
    errors = label_errors(oof, targets, task)
    assert errors["id"].tolist() == ["a", "b", "c"]  # margins 0.8, 0.4, 0.2
    assert errors.iloc[0][["label", "predicted"]].tolist() == ["dog", "cat"]
    assert errors.iloc[0]["confidence"] == pytest.approx(0.9)
