"""What the console shows: `kit runs` within 100 columns, 5-digit scores, a readable `kit runs
show`, and `kit pseudo`'s confidence quantiles and zero-label warnings."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from click.testing import CliRunner
from run_support import notebook_outputs

from kit.cli import cli
from kit.ledger import format_runs_table, format_seconds

LONG_SCORE = re.compile(r"\d\.\d{6,}")  # a score printed with more than 5 decimals


def test_the_runs_table_fits_100_columns_whatever_the_names():
    frame = pd.DataFrame(
        {
            "run": ["a-very-long-run-name-from-a-sweep-trial-0042", "r1"],
            "model": ["convnext_small.fb_in22k_ft_in1k_384", "test_resnet"],
            "metric": ["accuracy", "accuracy"],
            "cv": [0.9234972677595629, 0.5],
            "cv_std": [0.0123456789, None],
            "folds": ["[0, 1, 2, 3, 4]", "[0, 1]"],
            "epochs": [15, 3],
            "seconds": [175.0, 4000.0],
            "git_commit": ["0da39d0c5a595d389c3f0", ""],
            "folds_hash": ["abc", "abc"],
            "complete": [1, 0],
            "public": [0.9235, None],
            "submissions": [2, 0],
        }
    )
    text = format_runs_table(frame)
    lines = text.splitlines()
    assert lines[0] == "metric: accuracy"  # one metric: said once, not per row
    assert all(len(line) <= 100 for line in lines), max(map(len, lines))
    assert "0.92350" in text and "0.01235" in text and not LONG_SCORE.search(text)
    assert "2m55s" in text and "1h06m" in text and "175.0" not in text
    assert "[0, 1" not in text  # folds as a count, not a Python list
    assert "2 part" in lines[-1] and "0da39d0" in lines[1 + 1]
    assert format_seconds(41.4) == "41s"
    mixed = frame.assign(metric=["accuracy", "f1_macro"], sweep=["s1-long-sweep-name", None])
    wide = format_runs_table(mixed).splitlines()  # a metric column and an extra column
    assert all(len(line) <= 100 for line in wide) and "metric" in wide[0] and "sweep" in wide[0]


@pytest.fixture
def submitted(tiny):
    """r1 trained (tiny recipe), predicted, blended and submitted through the CLI."""
    runner = CliRunner()
    root = str(tiny.root)
    tiny_sets = [arg for text in ("train.epochs=1", "train.batch_size=16", "folds.n_splits=3",
                                  "predict.batch_size=64") for arg in ("--set", text)]  # fmt: skip
    for args in (["folds"], ["train", "--name", "r1", "--quiet"],
                 ["predict", "r1", "--tta", "identity", "--quiet"],
                 ["ensemble", "r1", "--name", "r1"]):  # fmt: skip
        done = runner.invoke(cli, [*args, "-C", root, *tiny_sets])
        assert done.exit_code == 0, done.output
    return tiny, runner, tiny_sets


@pytest.mark.slow
def test_runs_show_submit_and_pseudo_print_for_people(submitted):
    competition, runner, tiny_sets = submitted
    root = str(competition.root)
    submission = str(competition.root / "submissions" / "r1.csv")
    done = runner.invoke(cli, ["submit", "-C", root, submission, "-m", "first"])
    assert done.exit_code == 0, done.output
    assert re.search(r"public accuracy \d\.\d{5}\n", done.output), done.output

    done = runner.invoke(cli, ["runs", "-C", root])
    assert done.exit_code == 0 and not LONG_SCORE.search(done.output)
    assert all(len(line) <= 100 for line in done.output.splitlines())
    assert re.search(r"^r1 +test_resnet .*\d\.\d{5}", done.output, re.M), done.output

    done = runner.invoke(cli, ["runs", "show", "-C", root, "r1"])
    assert done.exit_code == 0, done.output
    assert "recall per class" in done.output and "fold  score" in done.output
    assert "CV with TTA" in done.output and "submissions: 1" in done.output
    assert not done.output.lstrip().startswith("{") and not LONG_SCORE.search(done.output)
    blob = json.loads(runner.invoke(cli, ["runs", "show", "-C", root, "r1", "--json"]).output)
    assert blob["run"] == "r1" and set(blob["per_class"]) == {str(c) for c in range(10)}

    done = runner.invoke(cli, ["pseudo", "-C", root, "r1", "--name", "none", "--threshold", "1"])
    assert done.exit_code == 0, done.output
    assert "0 of 30 test images labelled" in done.output
    assert "quantiles over the test images: q10 " in done.output and "q99" in done.output
    assert "Warning: no test image reaches --threshold 1.0 (the most confident has" in done.output

    done = runner.invoke(cli, ["pseudo", "-C", root, "r1", "--name", "all", "--threshold", "1e-6"])
    assert done.exit_code == 0 and "Warning" not in done.output
    labels = pd.read_csv(competition.root / "pseudo" / "all" / "labels.csv")
    assert labels["path"].str.startswith("data/").all()  # relative to the competition folder

    with pytest.warns(UserWarning, match="0 pseudo-labelled test images"):
        from kit.competition import Competition
        from kit.data.folds import training_table
        from kit.infer.pseudo import read_pseudo_labels

        stage2 = Competition.load(competition.root, ['train.pseudo="none"'])
        read_pseudo_labels(stage2, "none", training_table(stage2)[1])


@pytest.mark.slow
def test_the_eda_notebook_prints_plain_numbers_that_match_eda_html(digits):
    outputs = notebook_outputs(digits.root / "notebooks" / "eda.ipynb", timeout=180)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "np.int64" not in text and "np.float" not in text
    page = (digits.root / "eda.html").read_text()
    mean = re.search(r"mean = (\[[^\]]+\])", page).group(1)
    std = re.search(r"std = (\[[^\]]+\])", page).group(1)
    assert f"mean {mean}\n" in text and f"std  {std}\n" in text
    assert "sizes (width x height: images): 8x8: 120" in text
    assert "train vs test: adversarial AUC" in text
