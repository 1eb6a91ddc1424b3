"""Merging prediction tables' values (views, folds, runs) without leaving probability space.

`mean` averages probabilities. `gmean` (views, runs) and `logit` (folds) average in the task's
log space and map back (kit/task.py): the normalised geometric mean for softmax outputs, the mean
logit for sigmoid outputs. Ordinal `value` columns are plain numbers, so every merge of them is
the mean.
"""

from __future__ import annotations

import numpy as np

from kit.errors import ConfigError
from kit.task import Task

MERGES = ("mean", "gmean", "logit")


def merge(
    stack: np.ndarray, how: str, task: Task, weights: np.ndarray | None = None, *, where: str = ""
) -> np.ndarray:
    """(M, ..., C) -> (..., C): the (weighted) mean of M tables, in probability or log space."""
    if how not in MERGES:
        raise ConfigError(f"{where or 'merge'} {how!r} is unknown: use one of {', '.join(MERGES)}")
    w = np.full(len(stack), 1.0 / len(stack)) if weights is None else np.asarray(weights, float)
    floating = np.issubdtype(stack.dtype, np.floating)
    w = (w / w.sum()).astype(stack.dtype if floating else np.float64)  # no upcast of float32
    if how == "mean" or not task.merges_in_log_space:
        return np.tensordot(w, stack, axes=1)
    return task.from_log_space(np.tensordot(w, task.to_log_space(stack), axes=1))
