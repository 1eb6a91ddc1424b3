"""The decision layer: turning predictions into labels the way the metric rewards, tuned on OOF.

- multiclass / binary: per-class offsets added to log-probabilities (macro-F1, QWK, ...).
- ordinal: cut-points on the `value` column (quadratic weighted kappa).
- multilabel: a threshold per column (F1).

A Decision is fitted on OOF and applied to prediction TABLES: it rewrites their values so that the
task's default decision (argmax, midpoints, 0.5) gives the tuned labels. So submission writing,
metrics and ensembles need not know it exists, and test.csv stays a table of the same columns.
Metrics that score probabilities (log_loss, AUC, RMSE) get no decision layer (kind "none").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OFFSETS = np.round(np.linspace(-2.0, 2.0, 41), 2)  # log-probability offsets tried per class
THRESHOLDS = np.round(np.linspace(0.05, 0.95, 19), 2)  # per-column thresholds tried (multilabel)
PASSES = 3  # coordinate-ascent sweeps over the classes / cuts / columns


@dataclass
class Decision:
    kind: str  # "none", "offsets", "cutpoints" or "thresholds"
    values: list[float] = field(default_factory=list)

    def apply(self, predictions: np.ndarray, task) -> np.ndarray:
        """A prediction table's values, rewritten so that task.decide gives the tuned labels."""
        values = np.asarray(predictions, dtype=np.float64)
        rewrite = _REWRITES.get(self.kind)
        return values if rewrite is None else rewrite(values, np.asarray(self.values), task)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "values": [float(v) for v in self.values]}

    @classmethod
    def from_dict(cls, data: dict) -> Decision:
        return cls(data["kind"], list(data.get("values", [])))


def _midpoints(task) -> np.ndarray:
    grades = np.asarray(task.classes, dtype=float)
    return (grades[1:] + grades[:-1]) / 2


def _shift_offsets(values: np.ndarray, offsets: np.ndarray, task) -> np.ndarray:
    return task.from_log_space(task.to_log_space(values) + offsets)


def _map_cutpoints(values: np.ndarray, cuts: np.ndarray, task) -> np.ndarray:
    """Values moved so that the default midpoints cut them where the tuned cut-points do."""
    mids = _midpoints(task)
    v = values.reshape(-1)
    mapped = np.interp(v, cuts, mids)
    mapped = np.where(v < cuts[0], v - cuts[0] + mids[0], mapped)
    mapped = np.where(v > cuts[-1], v - cuts[-1] + mids[-1], mapped)
    return mapped.reshape(values.shape)


def _map_thresholds(values: np.ndarray, t: np.ndarray, task) -> np.ndarray:
    """Values moved so that 0.5 splits them where the tuned thresholds do."""
    below = values * 0.5 / t
    above = 0.5 + (values - t) * 0.5 / (1 - t)
    return np.where(values < t, below, above)


_REWRITES = {"offsets": _shift_offsets, "cutpoints": _map_cutpoints, "thresholds": _map_thresholds}


def label_scorer(metric, task):
    """A fast (y_true, y_pred) -> score for the search; the metric's own code for anything else.
    The reported scores always come from metric.score."""
    if metric.from_labels is None:
        return None
    k = len(task.classes)
    if task.single_label and metric.name in (
        "accuracy",
        "f1_macro",
        "f1_micro",
    ):

        def score(y_true, y_pred):
            cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
            tp = np.diag(cm)
            if metric.name != "f1_macro":
                return tp.sum() / len(y_true)
            present = (cm.sum(0) + cm.sum(1)) > 0  # sklearn averages over labels that occur
            denom = cm.sum(0) + cm.sum(1)
            f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
            return f1[present].mean()

        return score
    if task.decision == "thresholds" and metric.name in ("f1_macro", "f1_micro"):

        def score(y_true, y_pred):
            tp = (y_true & y_pred).sum(0)
            denom = y_true.sum(0) + y_pred.sum(0)
            if metric.name == "f1_micro":
                return 2 * tp.sum() / denom.sum() if denom.sum() else 0.0
            return np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0).mean()

        return score
    return metric.from_labels


def fit_decision(task, metric, targets: np.ndarray, predictions: np.ndarray) -> Decision:
    """Coordinate ascent on the OOF metric; a change is kept only when it strictly helps."""
    score = label_scorer(metric, task)
    if score is None:
        return Decision("none")
    sign = 1.0 if metric.greater_is_better else -1.0
    values = np.asarray(predictions, dtype=np.float64)
    fit = {"offsets": _fit_offsets, "cutpoints": _fit_cutpoints, "thresholds": _fit_thresholds}
    return fit[task.decision](task, targets.astype(int), values, score, sign)


def _coordinate_ascent(start: np.ndarray, candidates, objective) -> np.ndarray:
    """Up to PASSES passes: position j tries each of candidates(j, current) in turn; a value
    that raises objective by more than 1e-12 is kept at once (ties keep the earlier value)."""
    values, best = start, objective(start)
    for _ in range(PASSES):
        changed = False
        for j in range(len(values)):
            for candidate in candidates(j, values):
                trial = values.copy()
                trial[j] = candidate
                s = objective(trial)
                if s > best + 1e-12:
                    best, values, changed = s, trial, True
        if not changed:
            break
    return values


def _fit_offsets(task, y, probs, score, sign) -> Decision:
    logp = task.to_log_space(probs)
    order = OFFSETS[np.argsort(np.abs(OFFSETS), kind="stable")]  # small offsets win ties
    offsets = _coordinate_ascent(
        np.zeros(probs.shape[1]),
        lambda j, current: order,
        lambda trial: sign * score(y, (logp + trial).argmax(1)),
    )
    return Decision("offsets", offsets.tolist())


def _fit_cutpoints(task, y, v, score, sign) -> Decision:
    v = v.reshape(-1)
    grades = np.asarray(task.classes, dtype=float)
    cuts = _midpoints(task)
    if not len(cuts):
        return Decision("none")
    step = float(np.min(np.diff(grades)))

    def between_neighbours(i: int, current: np.ndarray) -> np.ndarray:
        low = current[i - 1] if i > 0 else grades[0] - step
        high = current[i + 1] if i + 1 < len(current) else grades[-1] + step
        return np.linspace(low, high, 42)[1:-1]  # strictly between the neighbours

    cuts = _coordinate_ascent(
        cuts,
        between_neighbours,
        lambda trial: sign * score(y, grades[np.searchsorted(trial, v)].astype(int)),
    )
    return Decision("cutpoints", cuts.tolist())


def _fit_thresholds(task, y, probs, score, sign) -> Decision:
    order = THRESHOLDS[np.argsort(np.abs(THRESHOLDS - 0.5), kind="stable")]
    thresholds = _coordinate_ascent(
        np.full(probs.shape[1], 0.5),
        lambda j, current: order,
        lambda trial: sign * score(y, (probs >= trial).astype(int)),
    )
    return Decision("thresholds", thresholds.tolist())


def tune_decision(task, metric, targets: np.ndarray, predictions: np.ndarray, folds) -> dict:
    """Fit on all OOF rows; report the metric before, after (in-sample) and nested: for each fold,
    fit on the other folds' rows and score the held-out rows, all held-out rows pooled."""
    folds = np.asarray(folds)
    values = np.asarray(predictions, dtype=np.float64)
    decision = fit_decision(task, metric, targets, values)
    held_out = values.copy()
    for fold in np.unique(folds):
        inner = folds != fold
        fitted = fit_decision(task, metric, targets[inner], values[inner])
        held_out[~inner] = fitted.apply(values[~inner], task)
    return {
        "decision": decision,
        "before": metric.score(task, targets, values),
        "after": metric.score(task, targets, decision.apply(values, task)),
        "nested": metric.score(task, targets, held_out),
    }
