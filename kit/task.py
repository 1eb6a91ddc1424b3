"""What is predicted: the task decides the outputs, the loss, the activation and the columns.

- multiclass: one class per image; softmax over k outputs; columns p_<class>.
- binary: two classes, treated as multiclass with k = 2 (the submission may hold the probability
  of submission.positive_class).
- multilabel: any subset of k labels; sigmoid per output; columns p_<label>; targets are 0/1 rows.
- ordinal: ordered integer grades (e.g. 0-4); one regression output; column `value`, turned into
  grades by cut-points (default: the midpoints between grades).

Every prediction table (oof.csv, test.csv, blends) is `id` (+ `fold`) and `task.columns`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.errors import ConfigError, DataError

TASKS = ("multiclass", "binary", "multilabel", "ordinal")


@dataclass(frozen=True)
class Task:
    kind: str
    classes: tuple  # class labels, or label names for multilabel, in column order

    def __post_init__(self):
        if self.kind not in TASKS:
            raise ConfigError(f"task.type {self.kind!r} is unknown: use one of {', '.join(TASKS)}")
        if self.kind == "binary" and len(self.classes) != 2:
            raise DataError(
                f"task.type binary needs 2 classes, the data has {len(self.classes)}: "
                'set task.type = "multiclass"'
            )

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "ordinal" else len(self.classes)

    @property
    def columns(self) -> list[str]:
        return ["value"] if self.kind == "ordinal" else [f"p_{c}" for c in self.classes]

    def encode(self, targets: pd.Series) -> np.ndarray:
        """Targets as training and metrics use them: class index, 0/1 rows, or grade value."""
        if self.kind == "multilabel":
            return np.stack([np.asarray(t, dtype=np.float32) for t in targets])
        if self.kind == "ordinal":
            return targets.astype(np.float32).to_numpy()
        index = {c: i for i, c in enumerate(self.classes)}
        return targets.map(index).to_numpy(dtype=np.int64)

    def loss(self, logits, targets, label_smoothing: float = 0.0):
        import torch.nn.functional as F

        logits = logits.float()
        if self.kind == "multilabel":
            soft = targets * (1 - label_smoothing) + 0.5 * label_smoothing
            return F.binary_cross_entropy_with_logits(logits, soft)
        if self.kind == "ordinal":
            return F.smooth_l1_loss(logits.squeeze(1), targets)
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    def activate(self, logits):
        """Raw outputs -> what prediction tables hold (probabilities, or the grade value)."""
        logits = logits.float()
        if self.kind == "multilabel":
            return logits.sigmoid()
        if self.kind == "ordinal":
            return logits
        return logits.softmax(dim=1)

    def decide(self, predictions: np.ndarray, cutpoints: list[float] | None = None) -> np.ndarray:
        """Prediction table values -> hard labels: class index, 0/1 rows, or grade."""
        if self.kind == "multilabel":
            return (predictions >= 0.5).astype(int)
        if self.kind == "ordinal":
            grades = np.asarray(self.classes, dtype=float)
            cuts = cutpoints if cutpoints is not None else (grades[1:] + grades[:-1]) / 2
            return grades[np.searchsorted(cuts, predictions.reshape(-1))].astype(int)
        return predictions.argmax(axis=1)


def create_task(kind: str, targets: pd.Series) -> Task:
    """The task of a training table's target column (classes sorted, numbers before strings)."""
    if kind == "multilabel":
        raise ConfigError("multilabel tasks take their label names from data columns")
    unique = targets.dropna().unique().tolist()
    classes = sorted(unique, key=lambda v: (isinstance(v, str), v))
    return Task(kind, tuple(classes))
