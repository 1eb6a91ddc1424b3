"""kit ensemble on runs whose prediction tables are built here, in a real digits folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kit.cli import cli
from kit.competition import Competition
from kit.config import dump_toml
from kit.data.folds import folds_hash, make_folds, training_table
from kit.errors import KitError
from kit.infer.ensemble import ensemble_runs, hill_climb
from kit.submission import check_submission
from kit.task import Task

COLUMNS = [f"p_{c}" for c in range(10)]


@pytest.fixture
def folded(digits):
    make_folds(digits)
    return digits


def sample_ids(competition) -> pd.Series:
    return pd.read_csv(competition.root / "data" / "sample_submission.csv", dtype={"id": str})["id"]


def noisy(truth: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Probabilities leaning towards truth by `signal` (0 = pure noise)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(truth), 10))
    logits[np.arange(len(truth)), truth] += signal
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def fake_run(competition, name, oof, test, *, hash_=None, classes=None, test_ids=None):
    """A run folder as `kit train` + `kit predict` leave it, with the given tables."""
    table, _ = training_table(competition)
    run_dir = competition.runs_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(dump_toml(competition.config.to_dict()))
    info = {"run": name, "classes": classes or list(range(10)),
            "folds_hash": hash_ or folds_hash(table)}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(info))
    oof_frame = pd.concat([table[["id", "fold"]], pd.DataFrame(oof, columns=COLUMNS)], axis=1)
    oof_frame.to_csv(run_dir / "oof.csv", index=False)
    ids = sample_ids(competition) if test_ids is None else test_ids
    test_frame = pd.DataFrame(test[: len(ids)], columns=COLUMNS)
    test_frame.insert(0, "id", list(ids))
    test_frame.to_csv(run_dir / "test.csv", index=False)
    truth = table["target"].to_numpy()
    cv = float(np.mean(oof.argmax(1) == truth))
    (run_dir / "metrics.json").write_text(json.dumps({"metric": "accuracy", "cv": cv}))
    return oof, test


def truth_of(competition) -> np.ndarray:
    table, task = training_table(competition)
    return task.encode(table["target"])


def test_mean_blend_writes_the_submission_and_the_card(folded):
    truth = truth_of(folded)
    a = fake_run(folded, "a", noisy(truth, 2.0, 1), noisy(np.zeros(30, int), 1.0, 2))
    b = fake_run(folded, "b", noisy(truth, 1.5, 3), noisy(np.zeros(30, int), 0.5, 4))
    result = ensemble_runs(folded, ["a", "b"], "blend")
    submitted = pd.read_csv(result["submission"], dtype={"id": str})
    assert submitted["label"].tolist() == ((a[1] + b[1]) / 2).argmax(1).tolist()
    check_submission(folded, folded.root / "submissions" / "blend.csv", list(range(10)))
    blended_oof = (a[0] + b[0]) / 2
    assert result["cv"] == pytest.approx(np.mean(blended_oof.argmax(1) == truth))
    assert result["cv_nested"] == result["cv"]  # nothing fitted, nothing to nest
    card = json.loads((folded.root / "blends" / "blend" / "card.json").read_text())
    assert [m["run"] for m in card["members"]] == ["a", "b"]
    assert [m["weight"] for m in card["members"]] == [0.5, 0.5]
    assert card["members"][0]["cv"] == pytest.approx(np.mean(a[0].argmax(1) == truth))
    corr = np.array(card["oof_correlation"])
    assert corr.shape == (2, 2) and corr[0, 0] == 1.0 and 0 < corr[0, 1] < 1
    md = (folded.root / "blends" / "blend" / "card.md").read_text()
    assert "| a | 0.500 |" in md and "OOF correlation" in md
    oof = pd.read_csv(folded.root / "blends" / "blend" / "oof.csv", dtype={"id": str})
    np.testing.assert_allclose(oof[COLUMNS].to_numpy(), blended_oof, atol=1e-9)


def test_fitted_weights_favour_the_good_run_and_are_scored_nested(folded):
    truth = truth_of(folded)
    test = noisy(np.zeros(30, int), 1.0, 9)
    fake_run(folded, "good", noisy(truth, 2.5, 1), test)
    fake_run(folded, "noise", noisy(truth, 0.0, 2), test)
    fake_run(folded, "fair", noisy(truth, 1.5, 3), test)
    result = ensemble_runs(folded, ["good", "noise", "fair"], "w", method="weights")
    weights = {m["run"]: m["weight"] for m in result["members"]}
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    assert weights["good"] > weights["noise"]
    assert result["cv"] >= max(m["cv"] for m in result["members"]) - 1e-9
    assert result["cv_nested"] is not None and 0 <= result["cv_nested"] <= 1


def test_hill_climbing_never_adds_a_member_that_hurts():
    truth = np.array([0, 1, 1, 0, 1])
    right = np.eye(2)[truth] * 0.8 + 0.1
    wrong = 1 - right
    stack = np.stack([wrong, right])

    def score(values):
        return float(np.mean(values.argmax(1) == truth))

    weights = hill_climb(stack, "mean", Task("binary", (0, 1)), score, lambda a, b: a > b, steps=10)
    np.testing.assert_allclose(weights, [0.0, 1.0])


def test_rank_and_gmean_blends_are_valid_submissions(folded):
    truth = truth_of(folded)
    test = noisy(np.arange(30) % 10, 2.0, 5)
    fake_run(folded, "a", noisy(truth, 2.0, 1), test)
    for method in ("rank", "gmean"):
        result = ensemble_runs(folded, ["a"], method, method=method)
        check_submission(folded, folded.root / "submissions" / f"{method}.csv", list(range(10)))
        assert result["method"] == method and result["cv"] is not None
    gmean = pd.read_csv(folded.root / "submissions" / "gmean.csv")
    assert gmean["label"].tolist() == test.argmax(1).tolist()  # one member: itself


def test_decision_layer_is_tuned_on_oof_and_applied_to_test(folded):
    competition = Competition.load(folded.root, ["metric.name=f1_macro"])
    truth = truth_of(competition)
    oof = noisy(truth, 1.5, 1)
    oof[:, 3] *= 0.2  # class 3 is under-called ...
    test = noisy(np.arange(30) % 10, 1.5, 2)
    test[:, 3] *= 0.2  # ... on test as well
    fake_run(competition, "a", oof / oof.sum(1, keepdims=True), test / test.sum(1, keepdims=True))
    result = ensemble_runs(competition, ["a"], "tuned", decide=True)
    decision = result["decision"]
    assert decision["kind"] == "offsets" and decision["values"][3] > 0
    assert result["cv"] > result["cv_before_decision"]
    assert result["cv_nested"] is not None
    submitted = pd.read_csv(result["submission"])
    expected = (np.log(test / test.sum(1, keepdims=True)) + decision["values"]).argmax(1)
    assert submitted["label"].tolist() == expected.tolist()


def test_runs_on_different_folds_refuse_a_fitted_blend(folded):
    truth = truth_of(folded)
    test = noisy(np.zeros(30, int), 1.0, 9)
    fake_run(folded, "a", noisy(truth, 2.0, 1), test)
    fake_run(folded, "b", noisy(truth, 2.0, 2), test, hash_="0123456789abcdef")
    with pytest.raises(KitError, match="different folds .* retrain on one folds.csv"):
        ensemble_runs(folded, ["a", "b"], "x", method="weights")
    with pytest.raises(KitError, match="different folds"):
        ensemble_runs(folded, ["a", "b"], "x", decide=True)
    result = ensemble_runs(folded, ["a", "b"], "x")  # a plain mean is still allowed, without CV
    assert result["cv"] is None and result["cv_nested"] is None


def test_bad_runs_and_weights_are_one_line_errors(folded):
    truth = truth_of(folded)
    test = noisy(np.zeros(30, int), 1.0, 9)
    ids = sample_ids(folded)
    fake_run(folded, "a", noisy(truth, 2.0, 1), test)
    fake_run(folded, "other", noisy(truth, 2.0, 1), test, classes=list(range(1, 11)))
    fake_run(folded, "short", noisy(truth, 2.0, 1), test, test_ids=ids[1:])
    fake_run(folded, "extra", noisy(truth, 2.0, 1), test, test_ids=[*ids[1:], "zzz"])
    with pytest.raises(KitError, match="run 'other' was trained on classes 1, 2, 3"):
        ensemble_runs(folded, ["a", "other"], "x")
    with pytest.raises(KitError, match=r"short/test.csv: 1 id\(s\) missing: .*kit predict short"):
        ensemble_runs(folded, ["a", "short"], "x")
    with pytest.raises(KitError, match=r"1 id\(s\) not in sample_submission: zzz"):
        ensemble_runs(folded, ["extra"], "x")
    for weights in ([0, 0], [-1, 2], [float("nan"), 1]):
        with pytest.raises(KitError, match="non-negative and sum to a positive number"):
            ensemble_runs(folded, ["a", "other"], "x", weights=weights)
    with pytest.raises(KitError, match="2 weight"):
        ensemble_runs(folded, ["a"], "x", weights=[1, 2])
    assert not (folded.root / "submissions" / "x.csv").exists()  # nothing half-written
    result = CliRunner().invoke(
        cli, ["ensemble", "-C", str(folded.root), "a", "other", "--name", "x", "--weights", "0,0"]
    )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(
        cli, ["ensemble", "-C", str(folded.root), "a", "--name", "x", "--weights", "1,x"]
    )
    assert result.exit_code == 2 and "--weights '1,x'" in result.output


def test_the_cli_prints_members_and_nested_cv(folded):
    truth = truth_of(folded)
    test = noisy(np.zeros(30, int), 1.0, 9)
    fake_run(folded, "a", noisy(truth, 2.0, 1), test)
    fake_run(folded, "b", noisy(truth, 1.0, 2), test)
    result = CliRunner().invoke(
        cli, ["ensemble", "-C", str(folded.root), "a", "b", "--name", "w", "--method", "weights"]
    )
    assert result.exit_code == 0, result.output
    assert "nested CV" in result.output and "weight" in result.output
    assert "card.md" in result.output
    as_json = CliRunner().invoke(
        cli, ["ensemble", "-C", str(folded.root), "a", "b", "--name", "w2", "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    card = json.loads(as_json.output)
    assert card["runs"] == ["a", "b"] and card["submission"].endswith("w2.csv")


def test_pseudo_labels_take_test_from_the_fold_ensemble_and_train_from_oof(folded):
    from kit.infer.pseudo import make_pseudo_labels

    truth = truth_of(folded)
    test_a, test_b = noisy(np.arange(30) % 10, 4.0, 5), noisy(np.arange(30) % 10, 4.0, 6)
    oof_a, _ = fake_run(folded, "a", noisy(truth, 2.0, 1), test_a)
    oof_b, _ = fake_run(folded, "b", noisy(truth, 2.0, 2), test_b)
    result = make_pseudo_labels(folded, ["a", "b"], "p1", threshold=0.8)
    labels = pd.read_csv(result["labels_csv"], dtype={"id": str})
    mean = (test_a + test_b) / 2
    test_rows = labels[labels["source"] == "test"]
    assert len(test_rows) == result["test_images"] == int((mean.max(1) >= 0.8).sum()) > 0
    assert (test_rows[COLUMNS].max(axis=1) >= 0.8).all()
    train_rows = labels[labels["source"] == "train"].set_index("id")
    table, _ = training_table(folded)
    np.testing.assert_allclose(  # a training image's soft label is the OOF of models that missed it
        train_rows.loc[table["id"], COLUMNS].to_numpy(), (oof_a + oof_b) / 2, atol=1e-6
    )
    stage1 = json.loads((folded.root / "pseudo" / "p1" / "stage1.json").read_text())
    assert stage1["stage1_runs"] == ["a", "b"] and stage1["soft"] is True
    hard = make_pseudo_labels(folded, ["a"], "p2", threshold=0.8, soft=False)
    hard_labels = pd.read_csv(hard["labels_csv"], dtype={"id": str})
    assert set(hard_labels["source"]) == {"test"} and "target" in hard_labels
    with pytest.raises(KitError, match="--threshold 1.5"):
        make_pseudo_labels(folded, ["a"], "p3", threshold=1.5)
    result = CliRunner().invoke(
        cli, ["pseudo", "-C", str(folded.root), "a", "--name", "p4", "--threshold", "0.8"]
    )
    assert result.exit_code == 0 and "test images labelled" in result.output


def test_a_single_fold_run_has_no_nested_cv_to_report(folded):
    truth = truth_of(folded)
    fake_run(folded, "a", noisy(truth, 2.0, 1), noisy(np.zeros(30, int), 1.0, 9))
    oof_path = folded.runs_dir / "a" / "oof.csv"
    oof = pd.read_csv(oof_path, dtype={"id": str})
    oof[oof["fold"] == 0].to_csv(oof_path, index=False)  # as `kit train --folds 0` leaves it
    result = ensemble_runs(folded, ["a"], "one", method="weights")
    assert result["cv"] is not None and result["cv_nested"] is None
