"""How much of a public ranking is noise: bootstrap intervals of public scores.

A public score is the metric on a few thousand rows; resampling those rows with replacement shows
how far it could move. For label metrics that a confusion matrix determines (accuracy, F1, QWK),
resampling n rows and counting (truth, prediction) pairs is one multinomial draw over the pairs;
the Poisson bootstrap (each pair's count redrawn as Poisson of itself) is its standard
approximation and costs one vectorised `rng.poisson` call for all resamples: about a millisecond
for 10k rows, cheap enough for every submission request. Other metrics resample rows directly.
"""

from __future__ import annotations

import numpy as np

from kit.metrics import get_metric

LEVEL = 0.90  # the interval's coverage
DRAWS = 500  # bootstrap resamples per score (confusion metrics); the row-resampling path uses 100
SEED = 20261201  # fixed, so a rescore gives the same intervals


def interval(metric_name: str, truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """The LEVEL bootstrap percentile interval of the metric over these rows."""
    if len(truth) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(SEED)
    tail = (1 - LEVEL) / 2 * 100
    if metric_name in CONFUSION_METRICS:
        labels, codes = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
        k, n = len(labels), len(truth)
        pairs = codes[:n] * k + codes[n:]
        counts = np.bincount(pairs, minlength=k * k)
        # the Poisson bootstrap: each pair count redrawn as Poisson(count), independently: the
        # multinomial resample's counts up to its fixed total, in one vectorised call
        draws = rng.poisson(counts, size=(DRAWS, k * k)).reshape(DRAWS, k, k)
        values = CONFUSION_METRICS[metric_name](draws)
    else:
        metric = get_metric(metric_name)
        index = rng.integers(0, len(truth), size=(100, len(truth)))
        values = np.array([metric.from_labels(truth[i], predicted[i]) for i in index])
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _accuracy(confusion: np.ndarray) -> np.ndarray:
    return np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))


def _f1_macro(confusion: np.ndarray) -> np.ndarray:
    # as sklearn's f1_score(average="macro", zero_division=0): over labels present in either side
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(float)
    actual, chosen = confusion.sum(axis=2), confusion.sum(axis=1)
    denominator = actual + chosen
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = denominator > 0
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _qwk(confusion: np.ndarray) -> np.ndarray:
    # as sklearn's cohen_kappa_score(weights="quadratic"): weights on the label positions
    k = confusion.shape[1]
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    total = confusion.sum(axis=(1, 2), keepdims=True)
    expected = confusion.sum(axis=2)[:, :, None] * confusion.sum(axis=1)[:, None, :] / total
    observed_cost = (weights * confusion).sum(axis=(1, 2))
    expected_cost = (weights * expected).sum(axis=(1, 2))
    return 1 - np.divide(
        observed_cost, expected_cost, out=np.zeros(len(confusion)), where=expected_cost > 0
    )


# single-label micro-F1 is accuracy
CONFUSION_METRICS = {
    "accuracy": _accuracy,
    "f1_micro": _accuracy,
    "f1_macro": _f1_macro,
    "qwk": _qwk,
}


def undetermined_ranks(rows: list[dict]) -> int:
    """How many teams' public ranks the intervals leave open: a team whose interval overlaps
    another team's could swap places with it on fresh rows, as the private split is."""
    open_count = 0
    for row in rows:
        for other in rows:
            if other is row:
                continue
            if (
                row["public_low"] <= other["public_high"]
                and other["public_low"] <= row["public_high"]
            ):
                open_count += 1
                break
    return open_count
