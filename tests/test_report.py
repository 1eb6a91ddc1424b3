"""report.html and the runs overview, checked as numbers and as pages rendered in real chromium."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from browser import assert_plot_drawn, needs_chromium, render
from conftest import TINY

from kit.competition import Competition
from kit.report import label_errors, read_epochs, write_runs_overview, zoomed_limits
from kit.task import Task


def test_label_errors_are_sorted_by_the_confidence_they_show():
    task = Task("multiclass", ("a", "b", "c"))
    # row 0: margin 0.50 - 0.45 = 0.05 but confidence 0.50; row 1: margin 0.4 - 0.0, conf 0.4
    oof = pd.DataFrame(
        {
            "id": ["x", "y", "z"],
            "p_a": [0.05, 0.0, 0.9],
            "p_b": [0.50, 0.4, 0.05],
            "p_c": [0.45, 0.6, 0.05],
        }  # fmt: skip
    )
    targets = np.array([2, 1, 0])  # x: label c predicted b; y: label b predicted c; z right
    errors = label_errors(oof, targets, task)
    assert errors["id"].tolist() == ["y", "x"]  # 0.6 before 0.5
    assert errors["confidence"].is_monotonic_decreasing
    assert errors["p_label"].tolist() == pytest.approx([0.4, 0.45])


def test_the_metric_axis_zooms_into_where_the_scores_are():
    scores = np.array([0.2, 0.6, 0.97, 0.985, 0.99, 0.992, 0.995])
    epochs = np.arange(1, 8)
    low, high = zoomed_limits(scores, epochs > 7 / 2)  # the later half: 0.985 ... 0.995
    assert 0.98 < low < 0.985 and 0.995 < high < 1.0
    low, high = zoomed_limits(scores)  # TTA views: every value stays visible
    assert low < 0.2
    low, high = zoomed_limits(np.array([0.5, 0.5]))
    assert low < 0.5 < high  # a flat curve still gets a visible range


@pytest.fixture
def trained(tiny):
    """r1 trained for 2 epochs, predicted with TTA, submitted to the local leaderboard."""
    from kit.data.folds import make_folds
    from kit.infer.ensemble import ensemble_runs
    from kit.infer.predict import predict_run
    from kit.platforms import submit
    from kit.train.cv import train_run

    competition = Competition.load(tiny.root, [*TINY, "train.epochs=2"])
    make_folds(competition)
    train_run(competition, "r1", progress=False)
    before = (competition.runs_dir / "r1" / "report.html").read_text()
    predict_run(competition, "r1", tta=["identity", "shift:1,0"], progress=False)
    blend = ensemble_runs(competition, ["r1"], "r1")
    submit(competition, blend["submission"], "r1")
    return competition, before


@pytest.mark.slow
@needs_chromium
def test_report_and_runs_overview_render_with_every_plot_drawn(trained):
    competition, before = trained
    run_dir = competition.runs_dir / "r1"
    epochs = read_epochs(run_dir / "log.jsonl")
    assert sorted(epochs["epoch"].unique()) == [1, 2] and epochs["val_loss"].gt(0).all()
    assert "Test-time augmentation" not in before  # training alone knows no TTA
    page = (run_dir / "report.html").read_text()
    info = json.loads((run_dir / "run.json").read_text())
    for fact in ("test_resnet", "32 px", "recipe", "training time", info["started_at"]):
        assert fact in page, fact
    overview = write_runs_overview(competition)
    assert overview["runs"] == 1 and overview["scored"] == 1

    seen = render([run_dir / "report.html", competition.runs_dir / "index.html"])
    report, runs = seen[run_dir / "report.html"], seen[competition.runs_dir / "index.html"]
    assert report["title"] == "kit run r1"
    for heading in ("Learning curves", "Confusion matrix (out of fold)",
                    "Test-time augmentation (out of fold)", "Per-class scores (out of fold)"):  # fmt: skip
        assert heading in report["headings"], heading
    plots = {image["alt"]: image for image in report["images"] if "plot" in (image["alt"] or "")
             or image["alt"] in ("learning curves", "confusion matrix", "TTA views")}  # fmt: skip
    assert set(plots) == {"learning curves", "confusion matrix", "TTA views"}
    for image in plots.values():
        assert_plot_drawn(image)
        assert image["shownWidth"] > 200  # laid out on the page, not collapsed
    thumbs = [image for image in report["images"] if image["alt"] not in plots]
    assert thumbs and all(image["naturalWidth"] > 0 for image in thumbs)  # the error gallery
    (plot,) = runs["images"]
    assert_plot_drawn(plot)
    on_disk = (competition.runs_dir / "cv_vs_lb.png").read_bytes()
    assert on_disk.startswith(b"\x89PNG") and len(on_disk) > 5000
