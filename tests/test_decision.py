"""The decision layer on prediction tables built here: offsets, cut-points, thresholds, nested CV."""

from __future__ import annotations

import numpy as np
import pytest

from kit.infer.decision import Decision, fit_decision, label_scorer, tune_decision
from kit.metrics import get_metric
from kit.task import Task

RNG = np.random.default_rng(0)


def skewed_multiclass(n=600, k=4, seed=1):
    """Probabilities that under-call class 0: its true rows carry only a weak signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += np.where(y == 0, 0.6, 2.5)
    logits[:, 0] -= 1.0
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True), rng.integers(0, 5, n)


@pytest.mark.parametrize("name", ["accuracy", "f1_macro", "f1_micro"])
def test_the_fast_scorers_equal_the_metric(name):
    task = Task("multiclass", (0, 1, 2, 3, 4))
    metric = get_metric(name, "multiclass")
    fast = label_scorer(metric, task)
    for _ in range(5):
        y, pred = RNG.integers(0, 4, 200), RNG.integers(0, 5, 200)  # class 4 only predicted
        assert fast(y, pred) == pytest.approx(metric.from_labels(y, pred))
    labels = Task("multilabel", ("a", "b", "c"))
    if name != "accuracy":
        metric = get_metric(name, "multilabel")
        y, pred = RNG.integers(0, 2, (50, 3)), RNG.integers(0, 2, (50, 3))
        y[:, 2] = 0
        assert label_scorer(metric, labels)(y, pred) == pytest.approx(metric.from_labels(y, pred))


def test_offsets_raise_macro_f1_and_rewrite_the_table():
    task = Task("multiclass", (0, 1, 2, 3))
    metric = get_metric("f1_macro", "multiclass")
    y, p, folds = skewed_multiclass()
    decision = fit_decision(task, metric, y, p)
    assert decision.kind == "offsets" and decision.values[0] > 0  # class 0 is favoured
    tuned = decision.apply(p, task)
    np.testing.assert_allclose(tuned.sum(1), 1.0)  # still probabilities
    expected = (np.log(p) + np.asarray(decision.values)).argmax(1)
    assert (task.decide(tuned) == expected).all()  # argmax of the table is the tuned decision
    assert metric.score(task, y, tuned) > metric.score(task, y, p) + 0.02
    report = tune_decision(task, metric, y, p, folds)
    assert report["before"] == pytest.approx(metric.score(task, y, p))
    assert report["nested"] > report["before"]  # the gain survives nested CV
    assert report["after"] >= report["nested"] - 0.02


def test_nested_cv_does_not_credit_a_decision_fitted_to_noise():
    task = Task("multiclass", (0, 1, 2))
    metric = get_metric("f1_macro", "multiclass")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)  # no signal at all
    report = tune_decision(task, metric, y, p, rng.integers(0, 5, 300))
    assert report["after"] > report["before"]  # in-sample tuning always finds something
    assert report["nested"] < report["after"]  # nested CV shows it was luck


def test_cutpoints_raise_qwk_and_default_decide_reads_them():
    task = Task("ordinal", (0, 1, 2, 3, 4))
    metric = get_metric("qwk", "ordinal")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 800)
    value = 0.55 * y + 0.6 + rng.normal(0, 0.25, 800)  # shrunk and shifted: midpoints misread it
    decision = fit_decision(task, metric, y, value[:, None])
    assert decision.kind == "cutpoints" and np.all(np.diff(decision.values) > 0)
    tuned = decision.apply(value[:, None], task)
    assert tuned.shape == (800, 1)
    np.testing.assert_array_equal(task.decide(tuned), task.decide(value[:, None], decision.values))
    assert metric.score(task, y, tuned) > metric.score(task, y, value[:, None]) + 0.05


def test_thresholds_per_column_for_multilabel_f1():
    task = Task("multilabel", ("a", "b"))
    metric = get_metric("f1_macro", "multilabel")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (400, 2))
    p = np.clip(0.3 * y + rng.uniform(0, 0.35, (400, 2)), 0, 1)  # positives rarely reach 0.5
    decision = fit_decision(task, metric, y, p)
    assert decision.kind == "thresholds" and max(decision.values) < 0.5
    tuned = decision.apply(p, task)
    assert ((tuned >= 0) & (tuned <= 1)).all()
    np.testing.assert_array_equal(
        task.decide(tuned), (p >= np.asarray(decision.values)).astype(int)
    )
    assert metric.score(task, y, tuned) > metric.score(task, y, p) + 0.2


def test_probability_metrics_get_no_decision_and_decisions_round_trip():
    task = Task("binary", (0, 1))
    y, p = np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert fit_decision(task, get_metric("log_loss", "binary"), y, p).kind == "none"
    decision = Decision("offsets", [0.0, 0.5])
    assert Decision.from_dict(decision.to_dict()) == decision
    np.testing.assert_allclose(Decision("none").apply(p, task), p)
