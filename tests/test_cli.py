"""The CLI as a user meets it: help, errors (one line, exit 2, no traceback), the whole loop."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY

from kit.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_help_never_imports_torch():
    code = (
        "import sys; from kit.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'timm', 'albumentations', 'kaggle', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_every_command_help_ends_with_an_example():
    for name in cli.commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0
        body = result.output.split("Options:")[0].strip()
        assert "Example" in body and body.splitlines()[-1].strip().startswith("kit "), name


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_bad_input_is_one_line_and_exit_2(digits, tmp_path):
    root = digits.root
    assert_one_line_error(
        invoke("train", "-C", root, "--set", "train.epoch=3"), "did you mean 'epochs'"
    )
    assert_one_line_error(
        invoke("train", "-C", root, "--set", "train.epochs=many"), "train.epochs must be int"
    )
    assert_one_line_error(invoke("new", "digits", "--parent", root.parent), "already exists")
    assert_one_line_error(invoke("new", "Not A Slug"), "not a slug")
    assert_one_line_error(invoke("train", "-C", root), "kit folds")
    assert invoke("folds", "-C", root).exit_code == 0
    assert_one_line_error(invoke("folds", "-C", root), "--force")
    assert_one_line_error(invoke("predict", "-C", root, "ghost"), "run 'ghost' not found")
    assert_one_line_error(invoke("train", "-C", tmp_path / "nowhere"), "kit.toml not found")
    empty = invoke("new", "empty", "--example", "digits", "--parent", tmp_path)
    assert empty.exit_code == 0
    assert_one_line_error(invoke("folds", "-C", tmp_path / "empty"), "run `kit download")


def test_validate_prints_every_problem(digits):
    sample = pd.read_csv(digits.root / "data" / "sample_submission.csv", dtype={"id": str})
    bad = sample.copy()
    bad.loc[0, "label"] = 42
    bad.loc[1, "id"] = bad.loc[2, "id"]
    path = digits.root / "bad.csv"
    bad.to_csv(path, index=False)
    result = invoke("validate", "-C", digits.root, path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("Error: ") for line in lines)
    assert (
        "duplicate" in lines[0]
        and "missing" in lines[1]
        and "outside the class set: 42" in lines[2]
    )
    assert invoke("submit", "-C", digits.root, path, "-m", "x").exit_code == 2
    sample.to_csv(path, index=False)
    assert invoke("validate", "-C", digits.root, path).output.strip().endswith("valid")


@pytest.mark.slow
def test_the_whole_loop_from_the_cli(digits):
    root = digits.root
    sets = [arg for pair in (("--set", s) for s in TINY) for arg in pair]
    result = invoke(
        "run", "-C", root, "--name", "e2e", "--quiet", "--json", *sets, "-m", "end to end"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["run"] == "e2e" and 0.0 <= summary["public_score"] <= 1.0
    for artefact in ("runs/e2e/oof.csv", "runs/e2e/test.csv", "submissions/e2e.csv", "folds.csv"):
        assert (root / artefact).exists(), artefact
    board = invoke("leaderboard", "-C", root, "--json")
    rows = json.loads(board.output)
    assert rows[0]["team"] == "tester" and rows[0]["message"] == "end to end"
    assert rows[0]["public_score"] == pytest.approx(summary["public_score"])
    assert "private_score" not in rows[0]
    assert (
        "private_score"
        in json.loads(invoke("leaderboard", "-C", root, "--private", "--json").output)[0]
    )
    # a second run reuses data and folds, and the daily limit (5) is enforced by `kit submit`
    submission = root / "submissions" / "e2e.csv"
    for _ in range(4):
        assert invoke("submit", "-C", root, submission, "-m", "again").exit_code == 0
    assert_one_line_error(
        invoke("submit", "-C", root, submission, "-m", "sixth"), "daily limit of 5"
    )


def test_eda_and_folds_check(digits):
    root = digits.root
    assert invoke("folds", "-C", root).exit_code == 0
    result = invoke("eda", "-C", root)
    assert result.exit_code == 0, result.output
    assert "120 images, 10 classes" in result.output
    html = (root / "eda.html").read_text()
    assert "data:image/png;base64" in html
    assert invoke("folds", "-C", root, "--check").output.strip().endswith("no leaks found")
    # plant a leak: a copy of a fold-0 image under a fold-1 id
    folds = pd.read_csv(root / "folds.csv", dtype={"id": str})
    source = folds[folds["fold"] == 0].iloc[0]
    target = folds[folds["fold"] == 1].iloc[0]
    images = root / "data" / "train"
    (images / f"{target['id']}.png").write_bytes((images / f"{source['id']}.png").read_bytes())
    leak = invoke("folds", "-C", root, "--check")
    assert leak.exit_code == 2
    assert source["id"] in leak.output and target["id"] in leak.output


def test_download_refuses_a_limit_too_small_to_hold_every_class(tmp_path):
    root = tmp_path / "competitions" / "digits"
    assert invoke("new", "digits", "--example", "digits", "--parent", root.parent).exit_code == 0
    result = invoke("download", "-C", root, "--limit", "40", "--quiet")
    assert_one_line_error(result, "--limit 40: the digits example needs at least 50 images")
    assert not (root / "data" / "train.csv").exists()
    assert invoke("download", "-C", root, "--limit", "50", "--quiet").exit_code == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["train", "--folds", "0,x"], "--folds '0,x'"),
        (["export", "some-run", "--folds", "1;2"], "--folds '1;2'"),
        (["bench", "data", "--workers", "0,two"], "--workers '0,two'"),
        (["bench", "data", "--batch-sizes", "32,6.4"], "--batch-sizes '32,6.4'"),
        (["ensemble", "a", "b", "--weights", "0.7,x"], "--weights '0.7,x'"),
    ],
)
def test_comma_lists_refuse_what_is_not_a_number_in_one_line(tmp_path, args, named):
    result = CliRunner().invoke(cli, [*args, "-C", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {named}: give numbers separated by commas, e.g. " + (
        "0.7,0.3" if "--weights" in args else "0,1"
    )
