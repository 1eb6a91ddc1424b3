"""Score an uploaded submission: kit validate's rules first, then kit.metrics on both splits.

Validation is `kit.submission.validate_submission` itself (the same hostile-input rules and the
same one-line problems `kit validate` prints), run on the upload written to a private temp file;
scores are `kit.metrics` metrics on hard labels, as the local leaderboard scores them.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import ConfigError, SubmissionError
from kit.host import bootstrap
from kit.metrics import get_metric
from kit.submission import normalise_labels, validate_submission

# an upload may be this many times the size of sample_submission.csv (digits' predicted labels
# are as long as its zeros; class names or probabilities run longer), plus a fixed allowance
UPLOAD_SIZE_FACTOR = 8
UPLOAD_SIZE_ALLOWANCE = 64 * 1024  # bytes


@dataclass(frozen=True)
class Rules:
    """What a submission must look like and how it is scored (from the host's settings)."""

    metric: str
    id_column: str
    target_column: str
    format: str
    classes: tuple[str, ...]
    sample_path: Path

    @classmethod
    def from_meta(cls, settings: dict, hostdir: Path) -> Rules:
        return cls(
            metric=settings["metric"],
            id_column=settings["id_column"],
            target_column=settings["target_column"],
            format=settings["format"],
            classes=tuple(settings["classes"]),
            sample_path=Path(hostdir) / "public" / "sample_submission.csv",
        )

    @property
    def max_bytes(self) -> int:
        return self.sample_path.stat().st_size * UPLOAD_SIZE_FACTOR + UPLOAD_SIZE_ALLOWANCE


def check_metric(name: str) -> None:
    """Refuse, at init, a metric the host cannot score from a label submission."""
    if get_metric(name).from_labels is None:
        raise ConfigError(
            f"metric.name {name!r} needs probabilities; kit host scores label submissions "
            "(accuracy, f1_macro, f1_micro, qwk)"
        )


class AnswerKey:
    """The answers as arrays in one fixed id order, with the public rows marked."""

    def __init__(self, rows: list[tuple[str, str, str]]):
        self.ids = pd.Index([row[0] for row in rows])
        targets = pd.Series([row[1] for row in rows], dtype=str)
        self.integer_labels = bool(targets.str.fullmatch(r"-?\d+").all())
        self.targets = normalise_labels(targets, self.integer_labels).to_numpy(dtype=str)
        self.public = np.array([row[2] == "Public" for row in rows])
        self.canonical = np.unique(self.targets)  # labels normalise_labels leaves as they are


def problems(data: bytes, rules: Rules, scratch: Path) -> list[str]:
    """Every problem of the upload, as `kit validate` words them; [] when it is valid."""
    if len(data) > rules.max_bytes:
        return [f"file is {len(data):,} bytes; at most {rules.max_bytes:,} are accepted"]
    scratch.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=scratch, suffix=".csv")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return validate_submission(
            Path(temp),
            rules.sample_path,
            id_column=rules.id_column,
            target_column=rules.target_column,
            classes=list(rules.classes),
            format=rules.format,
        )
    finally:
        os.unlink(temp)


def score(data: bytes, rules: Rules, key: AnswerKey) -> dict:
    """Public score with its bootstrap interval, and the private score, of a valid upload."""
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    predicted = frame.set_index(rules.id_column)[rules.target_column].reindex(key.ids).fillna("")
    # one reading of labels with kit validate and the local board: "09" is label 9; a file
    # that already holds only canonical labels (the usual case) skips the string work
    values = predicted.to_numpy(dtype=str)
    if not np.isin(values, key.canonical).all():
        values = normalise_labels(predicted, key.integer_labels).to_numpy(dtype=str)
    predicted = values
    truth = key.targets
    if rules.metric == "qwk":  # grades need their order, so compare numbers
        predicted = np.array([float(p) if p else np.nan for p in predicted])
        truth = truth.astype(float)
    # label metrics depend only on which labels are equal (and, for qwk, on their order), so
    # the labels' positions in their sorted union score the same, and scikit-learn scores
    # integers several times faster than strings
    _, codes = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
    truth, predicted = codes[: len(truth)], codes[len(truth) :]
    metric = get_metric(rules.metric)
    public, private = key.public, ~key.public
    low, high = bootstrap.interval(rules.metric, truth[public], predicted[public])
    return {
        "public_score": _score(metric, truth[public], predicted[public]),
        "public_low": low,
        "public_high": high,
        "private_score": _score(metric, truth[private], predicted[private]),
    }


def _score(metric, truth: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(metric.from_labels(truth, predicted)) if len(truth) else None


def check_and_score(data: bytes, rules: Rules, key: AnswerKey, scratch: Path) -> dict:
    """Validate then score; raise SubmissionError with every problem of an invalid upload."""
    found = problems(data, rules, scratch)
    if found:
        raise SubmissionError("submission", found)
    return {"sha256": hashlib.sha256(data).hexdigest(), **score(data, rules, key)}
