"""kit predict on real digits runs: decodes, view selection on OOF, merges, forbidden views."""

from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY
from run_support import trained_digits

from kit.cli import cli
from kit.competition import Competition
from kit.errors import ConfigError
from kit.infer.merge import merge
from kit.infer.predict import parse_tta_option, predict_run, select_views
from kit.task import Task

BINARY = Task("binary", (0, 1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (3 folds, 1 epoch, 150 digits) shared by this module's tests."""
    return trained_digits(tmp_path_factory.mktemp("predict"), TINY)


def read(competition, name):
    return pd.read_csv(competition.runs_dir / "r1" / name, dtype={"id": str})


def test_each_image_is_decoded_once_whatever_the_views_and_folds(trained, monkeypatch):
    import kit.data.cache
    import kit.data.dataset

    decoded = collections.Counter()
    real = kit.data.dataset.load_rgb

    def counting(path, *target):  # target: the reduced-decode size (kit.data.images.load_rgb)
        decoded[path] += 1
        return real(path, *target)

    for module in (kit.data.dataset, kit.data.cache):  # wherever a file is decoded
        monkeypatch.setattr(module, "load_rgb", counting)
    views = ["identity", "shift:1,0", "hflip", "fivecrop:0.9"]  # 8 views, 3 folds
    result = predict_run(trained, "r1", tta=views, progress=False)
    test_ids = read(trained, "test.csv")["id"]
    test_paths = [p for p in decoded if "/test/" in p]
    train_paths = [p for p in decoded if "/train/" in p]
    assert len(test_paths) == len(test_ids) == 30 and len(train_paths) == 120
    assert set(decoded.values()) == {1}  # 8 views x 3 folds, yet each file decoded exactly once
    assert len(result["cv_by_view"]) == 8 and result["tta"] == result["tta_candidates"]
    by_fold = read(trained, "test_folds.csv")
    assert sorted(by_fold["fold"].unique()) == [0, 1, 2] and len(by_fold) == 3 * 30
    fold_mean = by_fold.groupby("id", sort=False).mean().drop(columns="fold")
    test = read(trained, "test.csv").set_index("id")
    np.testing.assert_allclose(fold_mean.loc[test.index].to_numpy(), test.to_numpy(), atol=1e-5)


def test_auto_keeps_only_views_that_raise_the_oof_score(trained):
    views = ["identity", "hflip", "vflip", "rot180", "shift:1,0"]
    result = predict_run(trained, "r1", tta=views, auto=True, progress=False)
    assert result["tta"][0] == "identity" and set(result["tta"]) <= set(views)
    assert result["tta_candidates"] == views and result["tta_auto"] is True
    # the chosen views never lower the OOF score below identity alone
    assert result["cv_tta"] >= result["cv_by_view"]["identity"]
    metrics = json.loads((trained.runs_dir / "r1" / "metrics.json").read_text())
    assert metrics["tta"] == result["tta"] and metrics["cv_tta"] == result["cv_tta"]


def test_select_views_is_greedy_and_strict():
    truth = np.array([0, 1, 0, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    fixes = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]])
    wrong = 1 - good
    stack = np.stack([good, wrong, fixes, good])  # identity, a harmful view, a helpful one, a copy

    def score(values):
        return float(np.mean(values.argmax(1) == truth))

    def better(new, old):
        return new > old

    chosen = select_views(["identity", "bad", "fix", "copy"], stack, score, better, "mean", BINARY)
    assert chosen == [0]  # identity is already perfect: nothing strictly raises it
    chosen = select_views(["bad", "fix"], stack[1:3], score, better, "mean", BINARY)
    assert chosen == [1]  # without identity, the best single view starts, and bad never joins


def test_view_and_fold_merges_stay_probabilities(trained):
    a = predict_run(trained, "r1", tta=["identity", "shift:0,1"], progress=False)
    prob = read(trained, "test.csv")
    b = predict_run(
        trained, "r1", tta=["identity", "shift:0,1"], merge="gmean", fold_merge="logit",
        progress=False,
    )  # fmt: skip
    logit = read(trained, "test.csv")
    for table in (prob, logit):
        np.testing.assert_allclose(table.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    assert (a["merge"], a["fold_merge"]) == ("mean", "prob")
    assert (b["merge"], b["fold_merge"]) == ("gmean", "logit")
    assert not np.allclose(prob.filter(like="p_"), logit.filter(like="p_"))
    # geometric mean: normalised product of probabilities
    p = np.array([[[0.2, 0.8]], [[0.6, 0.4]]])
    expected = np.sqrt(p[0] * p[1]) / np.sqrt(p[0] * p[1]).sum()
    np.testing.assert_allclose(merge(p, "gmean", Task("multiclass", (0, 1))), expected)


def test_forbidden_and_unknown_views_are_one_line_errors(trained):
    competition = Competition.load(trained.root, [*TINY, 'predict.forbid_views=["hflip"]'])
    with pytest.raises(ConfigError, match="predict.tta view 'hflip' is forbidden"):
        predict_run(competition, "r1", tta=["identity", "hflip"], progress=False)
    result = CliRunner().invoke(
        cli, ["predict", "-C", str(trained.root), "r1", "--tta", "identity,rot90",
              "--set", 'predict.forbid_views=["rot90"]', "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: predict.tta view 'rot90' is forbidden by predict.forbid_views (rot90): "
        "remove it from predict.tta"
    ]
    with pytest.raises(ConfigError, match="predict.merge 'median'"):
        predict_run(trained, "r1", merge="median", progress=False)


def test_the_cli_reports_kept_and_dropped_views(trained):
    result = CliRunner().invoke(
        cli, ["predict", "-C", str(trained.root), *sum((["--set", s] for s in TINY), []),
              "r1", "--tta", "auto,identity,shift:1,0", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "view identity" in result.output and "view shift:1,0" in result.output
    assert "kept" in result.output
    as_json = CliRunner().invoke(
        cli, ["predict", "-C", str(trained.root), *sum((["--set", s] for s in TINY), []),
              "r1", "--quiet", "--json"],
    )  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["run"] == "r1"


def test_tta_option_parsing_keeps_view_arguments():
    assert parse_tta_option("auto") == (None, True)
    assert parse_tta_option("identity,shift:1,0,crop:c,0.9") == (
        ["identity", "shift:1,0", "crop:c,0.9"],
        False,
    )
    assert parse_tta_option("auto,hflip,shift:-1,-2") == (["hflip", "shift:-1,-2"], True)
    assert parse_tta_option(None) == (None, False)


@pytest.mark.slow
def test_auto_drops_hflip_on_real_digits(tmp_path):
    """Digits are not flip-invariant: a model that reads them well is hurt by hflip, and kit sees
    it on OOF."""
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.scaffold import new_competition
    from kit.train.cv import train_run

    competition = new_competition("digits", tmp_path / "competitions", example="digits")
    download(competition, limit=300)
    recipe = ["folds.n_splits=3", "train.epochs=8", "train.batch_size=32", "train.image_size=16"]
    competition = Competition.load(competition.root, recipe)
    make_folds(competition)
    trained = train_run(competition, "r", progress=False)
    assert trained["cv"] > 0.6  # the model reads digits, so flipping them must show
    result = predict_run(competition, "r", tta=["identity", "hflip"], auto=True, progress=False)
    assert result["tta"] == ["identity"]
    assert result["cv_by_view"]["hflip"] < result["cv_by_view"]["identity"]
    assert result["cv_tta"] >= trained["cv"] - 1e-9
