"""Metrics on whole arrays, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kit.errors import ConfigError
from kit.metrics import get_metric
from kit.task import Task

TEN = Task("multiclass", tuple(range(3)))


def one_hot(labels, k=3, p=0.8):
    probs = np.full((len(labels), k), (1 - p) / (k - 1))
    probs[np.arange(len(labels)), labels] = p
    return probs


def test_accuracy_and_f1_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 0, 2])
    probs = one_hot(predicted)
    assert get_metric("accuracy", "multiclass").score(TEN, truth, probs) == pytest.approx(6 / 8)
    # per class F1: 0 -> P 3/4 R 3/4 = 0.75; 1 -> P 2/3 R 1 = 0.8; 2 -> P 1 R 1/2 = 2/3
    macro = (0.75 + 0.8 + 2 / 3) / 3
    assert get_metric("f1_macro", "multiclass").score(TEN, truth, probs) == pytest.approx(macro)
    assert get_metric("f1_micro", "multiclass").score(TEN, truth, probs) == pytest.approx(6 / 8)


def test_f1_of_a_whole_fold_is_not_the_mean_of_batch_f1():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 1, 2, 0, 2])
    metric = get_metric("f1_macro", "multiclass")
    whole = metric.score(TEN, truth, one_hot(predicted))
    halves = [
        metric.score(TEN, truth[s], one_hot(predicted[s])) for s in (slice(0, 4), slice(4, 8))
    ]
    # class 0: P 2/3 R 2/3; class 1: P 2/3 R 1 -> 0.8; class 2: P 1 R 2/3 -> 0.8
    assert whole == pytest.approx((2 / 3 + 0.8 + 0.8) / 3)
    assert abs(whole - np.mean(halves)) > 0.05  # what a per-batch average would have reported


def test_probability_metrics_by_hand():
    binary = Task("binary", ("no", "yes"))
    truth = np.array([0, 0, 1, 1])
    p_yes = np.array([0.1, 0.6, 0.4, 0.9])
    probs = np.stack([1 - p_yes, p_yes], axis=1)
    # pairs (neg, pos): (0.1,0.4) (0.1,0.9) (0.6,0.4) (0.6,0.9) -> 3 of 4 ranked right
    assert get_metric("roc_auc", "binary").score(binary, truth, probs) == pytest.approx(0.75)
    expected = -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    assert get_metric("log_loss", "binary").score(binary, truth, probs) == pytest.approx(expected)
    log_loss = get_metric("log_loss")
    assert log_loss.better(0.1, 0.2) and not log_loss.better(0.3, 0.2)


def test_mean_column_auc_skips_columns_with_one_value():
    task = Task("multilabel", ("a", "b", "c"))
    truth = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=float)
    probs = np.array([[0.9, 0.2, 0.5], [0.2, 0.8, 0.5], [0.7, 0.3, 0.5], [0.4, 0.4, 0.5]])
    # a: perfect -> 1.0; b: pos (0.8, 0.3) vs neg (0.2, 0.4) -> 3 of 4 = 0.75; c: all 1 -> skipped
    score = get_metric("mean_column_auc", "multilabel").score(task, truth, probs)
    assert score == pytest.approx((1.0 + 0.75) / 2)


def test_ordinal_qwk_and_rmse_by_hand():
    task = Task("ordinal", (0, 1, 2))
    truth = np.array([0.0, 1.0, 2.0, 2.0])
    values = np.array([[0.2], [1.4], [1.6], [2.1]])  # decided with midpoints: 0, 1, 2, 2
    assert get_metric("qwk", "ordinal").score(task, truth, values) == pytest.approx(1.0)
    rmse = np.sqrt(np.mean(np.array([0.2, 0.4, 0.4, 0.1]) ** 2))
    assert get_metric("rmse", "ordinal").score(task, truth, values) == pytest.approx(rmse)
    shifted = np.array([[1.0], [1.0], [1.0], [2.0]])  # decided 1, 1, 1, 2
    assert get_metric("qwk", "ordinal").score(task, truth, shifted) < 1.0


def test_a_metric_that_does_not_fit_the_task_names_the_ones_that_do():
    with pytest.raises(
        ConfigError, match=r"metric.name 'roc_auc' does not fit task.type 'multiclass'"
    ):
        get_metric("roc_auc", "multiclass")
    with pytest.raises(ConfigError, match=r"'rmse' does not fit.*use one of accuracy, f1_macro"):
        get_metric("rmse", "multiclass")
    with pytest.raises(ConfigError, match="metric.name 'f2' is unknown"):
        get_metric("f2")
