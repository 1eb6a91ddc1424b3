"""Competition metrics, always computed on whole arrays (a fold, a leaderboard split), never per batch.

`score(task, targets, predictions)` takes the task's encoded targets (class indices, 0/1 rows or
grades) and a prediction table's values (probabilities, or the ordinal `value` column).
`from_labels` scores hard labels, which is what a class-index submission holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score, log_loss, roc_auc_score

from kit.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    tasks: tuple[str, ...]  # the task kinds it can score
    fn: Callable  # (task, targets, predictions) -> float
    from_labels: Callable | None = None  # (y_true, y_pred) hard labels -> float

    def score(self, task, targets: np.ndarray, predictions: np.ndarray) -> float:
        return float(self.fn(task, targets, predictions))

    def better(self, new: float, old: float | None) -> bool:
        if old is None or np.isnan(old):
            return not np.isnan(new)
        return new > old if self.greater_is_better else new < old


def best_improvement(trials: dict, baseline: float, better) -> object | None:
    """The key of the trial that beats baseline by the most, or None when none beats it."""
    pick = None
    for key, value in trials.items():
        if better(value, baseline if pick is None else trials[pick]):
            pick = key
    return pick


def _accuracy_labels(y_true, y_pred):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _f1_labels(average):
    def score(y_true, y_pred):
        return f1_score(y_true, y_pred, average=average, zero_division=0)

    return score


def _qwk_labels(y_true, y_pred):
    return cohen_kappa_score(y_true, y_pred, weights="quadratic")


def _on_decisions(label_metric):
    """A metric of hard labels, applied to the task's decisions on a prediction table."""

    def score(task, targets, predictions):
        return label_metric(task.hard_targets(targets), task.decide(predictions))

    return score


def _log_loss(task, targets, probs):
    clipped = np.clip(probs, 1e-15, 1)
    # rows saved as float32 CSV text sum to 1 within ~1e-7, which sklearn warns about
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return log_loss(targets, clipped, labels=np.arange(probs.shape[1]))


def _roc_auc(task, targets, probs):
    return roc_auc_score(targets, probs[:, 1])


def _mean_column_auc(task, targets, probs):
    scores = [
        roc_auc_score(targets[:, j], probs[:, j])
        for j in range(targets.shape[1])
        if 0 < targets[:, j].sum() < len(targets)  # AUC needs both values in the column
    ]
    return float(np.mean(scores)) if scores else float("nan")


def _rmse(task, targets, values):
    return float(np.sqrt(np.mean((values.reshape(-1) - targets) ** 2)))


SINGLE = ("multiclass", "binary")
METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", True, SINGLE, _on_decisions(_accuracy_labels), _accuracy_labels),
        Metric(
            "f1_macro",
            True,
            (*SINGLE, "multilabel"),
            _on_decisions(_f1_labels("macro")),
            _f1_labels("macro"),
        ),
        Metric(
            "f1_micro",
            True,
            (*SINGLE, "multilabel"),
            _on_decisions(_f1_labels("micro")),
            _f1_labels("micro"),
        ),
        Metric("qwk", True, ("ordinal", "multiclass"), _on_decisions(_qwk_labels), _qwk_labels),
        Metric("log_loss", False, SINGLE, _log_loss),
        Metric("roc_auc", True, ("binary",), _roc_auc),
        Metric("mean_column_auc", True, ("multilabel",), _mean_column_auc),
        Metric("rmse", False, ("ordinal",), _rmse),
    ]
}


def get_metric(name: str, task_kind: str | None = None) -> Metric:
    """The metric by name; with task_kind, refuse one that cannot score that task."""
    if name not in METRICS:
        raise ConfigError(f"metric.name {name!r} is unknown: choose one of {', '.join(METRICS)}")
    metric = METRICS[name]
    if task_kind is not None and task_kind not in metric.tasks:
        fits = [m.name for m in METRICS.values() if task_kind in m.tasks]
        raise ConfigError(
            f"metric.name {name!r} does not fit task.type {task_kind!r}: use one of {', '.join(fits)}"
        )
    return metric
