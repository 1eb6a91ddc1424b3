"""Competition metrics, always computed on whole arrays (a fold, a leaderboard split), never per batch.

Each metric scores class probabilities (OOF and test predictions) and, where it can, hard labels
(what a class-index submission holds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kit.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    from_labels: Callable[[np.ndarray, np.ndarray], float]  # y_true, y_pred (class indices)
    from_probs: Callable[[np.ndarray, np.ndarray], float] | None = None  # y_true, probs (n, k)

    def score(self, y_true: np.ndarray, probs: np.ndarray) -> float:
        """Score class-index targets against an (n, k) probability matrix."""
        if self.from_probs is not None:
            return float(self.from_probs(y_true, probs))
        return float(self.from_labels(y_true, probs.argmax(axis=1)))

    def better(self, new: float, old: float | None) -> bool:
        if old is None or np.isnan(old):
            return not np.isnan(new)
        return new > old if self.greater_is_better else new < old


def _accuracy(y_true, y_pred):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _f1(average):
    def score(y_true, y_pred):
        from sklearn.metrics import f1_score

        return f1_score(y_true, y_pred, average=average, zero_division=0)

    return score


def _qwk(y_true, y_pred):
    from sklearn.metrics import cohen_kappa_score

    return cohen_kappa_score(y_true, y_pred, weights="quadratic")


def _log_loss(y_true, probs):
    from sklearn.metrics import log_loss

    return log_loss(y_true, np.clip(probs, 1e-15, 1), labels=np.arange(probs.shape[1]))


def _no_labels(y_true, y_pred):
    raise ConfigError("metric log_loss needs probabilities: use a probability submission format")


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, _accuracy),
    "f1_macro": Metric("f1_macro", True, _f1("macro")),
    "f1_micro": Metric("f1_micro", True, _f1("micro")),
    "qwk": Metric("qwk", True, _qwk),
    "log_loss": Metric("log_loss", False, _no_labels, _log_loss),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise ConfigError(f"metric.name {name!r} is unknown: choose one of {', '.join(METRICS)}")
    return METRICS[name]
