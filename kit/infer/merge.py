"""Merging prediction tables' values (views, folds, runs) without leaving probability space.

`mean` averages probabilities. `gmean` (views, runs) and `logit` (folds) average in log space and
map back: the normalised geometric mean for softmax outputs, the mean logit for sigmoid outputs.
Ordinal `value` columns are plain numbers, so every merge of them is the mean.
"""

from __future__ import annotations

import numpy as np

from kit.errors import ConfigError

EPS = 1e-7
MERGES = ("mean", "gmean", "logit")


def to_log_space(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "ordinal":
        return values
    p = np.clip(values, EPS, 1 - EPS if kind == "multilabel" else 1.0)
    return np.log(p) - np.log1p(-p) if kind == "multilabel" else np.log(p)


def from_log_space(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "ordinal":
        return z
    if kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def merge(
    stack: np.ndarray, how: str, kind: str, weights: np.ndarray | None = None, *, where: str = ""
) -> np.ndarray:
    """(M, ..., C) -> (..., C): the (weighted) mean of M tables, in probability or log space."""
    if how not in MERGES:
        raise ConfigError(f"{where or 'merge'} {how!r} is unknown: use one of {', '.join(MERGES)}")
    w = np.full(len(stack), 1.0 / len(stack)) if weights is None else np.asarray(weights, float)
    w = (w / w.sum()).astype(stack.dtype if stack.dtype.kind == "f" else np.float64)  # no upcast
    if how == "mean" or kind == "ordinal":
        return np.tensordot(w, stack, axes=1)
    return from_log_space(np.tensordot(w, to_log_space(stack, kind), axes=1), kind)
