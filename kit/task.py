"""What is predicted: the task owns every rule that depends on its kind.

- multiclass: one class per image; softmax over k outputs; columns p_<class>.
- binary: two classes, treated as multiclass with k = 2 (the submission may hold the probability
  of submission.positive_class).
- multilabel: any subset of k labels; sigmoid per output; columns p_<label>; targets are 0/1 rows.
- ordinal: ordered integer grades (e.g. 0-4); one regression output; column `value`, turned into
  grades by cut-points (default: the midpoints between grades).

`Task(kind, classes)` (or `create_task`) returns the class of that kind: SingleLabelTask,
MultiLabelTask or OrdinalTask. Each owns encoding, the loss (with class weights), the activation,
the decision, the log-space merge, rank normalising, label names and submission values, so a
module that handles predictions asks its task instead of testing the kind.

Every prediction table (oof.csv, test.csv, blends) is `id` (+ `fold`) and `task.columns`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch.nn.functional as F

from kit.choices import TaskType, choices
from kit.errors import ConfigError, DataError

TASKS = choices(TaskType)
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before a log


@dataclass(frozen=True)
class Task:
    kind: str
    classes: tuple  # class labels, or label names for multilabel, in column order

    single_label: ClassVar[bool] = False  # one class per image (multiclass, binary)
    multi_label: ClassVar[bool] = False  # any subset of labels: targets are 0/1 rows
    # the decision layer kit tunes on OOF (kit/infer/decision.py): per-class log-probability
    # offsets, per-label thresholds, or ordinal cut-points
    decision: ClassVar[str] = "offsets"
    rank_blend_renormalises: ClassVar[bool] = False  # rank tables' rows sum to 1 again

    def __new__(cls, kind: str | None = None, classes: tuple = ()):
        if cls is Task:
            if kind not in TASKS:
                raise ConfigError(f"task.type {kind!r} is unknown: use one of {', '.join(TASKS)}")
            cls = _CLASSES[kind]
        return super().__new__(cls)

    @classmethod
    def from_targets(cls, kind: str, targets: pd.Series, label_columns: tuple, classes: tuple):
        if classes:
            unknown = sorted(set(targets.astype(str)) - {str(c) for c in classes})
            if unknown:
                shown = ", ".join(repr(u) for u in unknown[:3]) + (
                    " ..." if len(unknown) > 3 else ""
                )
                raise DataError(f"label(s) {shown} are not in data.classes: add them to kit.toml")
            return cls(kind, classes)
        unique = targets.dropna().unique().tolist()
        return cls(kind, tuple(sorted(unique, key=lambda v: (isinstance(v, str), v))))

    def __post_init__(self):
        if self.kind == "binary" and len(self.classes) != 2:
            raise DataError(
                f"task.type binary needs 2 classes, the data has {len(self.classes)}: "
                'set task.type = "multiclass"'
            )

    # -- shape of a prediction table
    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def columns(self) -> list[str]:
        return [f"p_{c}" for c in self.classes]

    def label_names(self, targets: pd.Series) -> pd.Series:
        """Targets as the names a report or audit counts: the label, or a list of label names."""
        return targets

    def target_text(self, targets: pd.Series) -> pd.Series:
        """Targets as folds.csv writes them: the label, or label names joined by '|'."""
        return targets

    # -- training
    def encode(self, targets: pd.Series) -> np.ndarray:
        """Targets as training and metrics use them: class index, 0/1 rows, or grade value."""
        raise NotImplementedError

    def loss(self, logits, targets, label_smoothing: float = 0.0, class_weights=None):
        raise NotImplementedError

    def activate(self, logits):
        """Raw outputs -> what prediction tables hold (probabilities, or the grade value)."""
        raise NotImplementedError

    def validation_loss(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        """The loss on a prediction table (no label smoothing), beside the training loss."""
        raise NotImplementedError

    # -- decisions and merges
    def decide(self, predictions: np.ndarray, cutpoints: list[float] | None = None) -> np.ndarray:
        """Prediction table values -> hard labels: class index, 0/1 rows, or grade."""
        raise NotImplementedError

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        """Encoded targets in the form decide() returns, for label metrics."""
        return targets

    def to_log_space(self, values: np.ndarray) -> np.ndarray:
        """Where merges average: log-probabilities, logits, or the values themselves."""
        return values

    def from_log_space(self, z: np.ndarray) -> np.ndarray:
        return z

    def rank_table(self, values: np.ndarray) -> np.ndarray:
        """Each column's ranks scaled to (0, 1] (single-label rows renormalised to sum to 1)."""
        order = values.argsort(axis=0, kind="stable")
        ranks = np.empty_like(values, dtype=float)
        positions = np.arange(1, len(values) + 1, dtype=float)[:, None]
        np.put_along_axis(ranks, order, positions, axis=0)
        ranks /= len(values)
        return self.renormalise(ranks)

    def renormalise(self, table: np.ndarray) -> np.ndarray:
        """A blended table back onto the task's simplex (only single-label rows sum to 1)."""
        return table

    @property
    def can_rank(self) -> bool:
        """Whether a rank average means anything for this task's values."""
        return True

    def per_class_recall(self, targets: np.ndarray, decided: np.ndarray) -> dict:
        """{class: share of its images decided as it} (None for a class with no image)."""
        codes = self.codes()
        return {
            str(c): float(np.mean(decided[targets == code] == code))
            if (targets == code).any()
            else None
            for c, code in zip(self.classes, codes, strict=True)
        }

    def codes(self) -> np.ndarray:
        """What decide() returns for each class, in class order."""
        return np.arange(len(self.classes))

    def submission_labels(self, decided: np.ndarray, submission_format: str) -> list:
        """Hard labels as a submission column holds them (class_index or class_name)."""
        labels = np.asarray(self.classes, dtype=object)[decided]
        if submission_format == "class_index":
            if integer_labels(self.classes):  # the labels are the indices' own names
                return [int(v) for v in labels]
            return [int(i) for i in decided]
        return list(labels)

    @classmethod
    def check_submission_format(cls, submission_format: str) -> None:
        """Refuse a submission.format this kind of task cannot write (checked at load)."""

    @property
    def merges_in_log_space(self) -> bool:
        """False where every merge is the plain mean (ordinal values are numbers)."""
        return True


@dataclass(frozen=True)
class SingleLabelTask(Task):
    """multiclass and binary: softmax over the classes; a row of probabilities sums to 1."""

    single_label: ClassVar[bool] = True

    def encode(self, targets: pd.Series) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return targets.map(index).to_numpy(dtype=np.int64)

    def loss(self, logits, targets, label_smoothing: float = 0.0, class_weights=None):
        return F.cross_entropy(
            logits.float(), targets, weight=class_weights, label_smoothing=label_smoothing
        )

    def activate(self, logits):
        return logits.float().softmax(dim=1)

    def validation_loss(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        values = np.clip(np.asarray(predictions, dtype=np.float64), EPS, 1 - EPS)
        return float(-np.mean(np.log(values[np.arange(len(targets)), targets])))

    def decide(self, predictions: np.ndarray, cutpoints: list[float] | None = None) -> np.ndarray:
        return predictions.argmax(axis=1)

    def to_log_space(self, values: np.ndarray) -> np.ndarray:
        return np.log(np.clip(values, EPS, 1.0))

    def from_log_space(self, z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def renormalise(self, table: np.ndarray) -> np.ndarray:
        return table / table.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class MultiLabelTask(Task):
    """Any subset of labels: a sigmoid per label; targets are 0/1 rows."""

    decision: ClassVar[str] = "thresholds"
    multi_label: ClassVar[bool] = True

    @classmethod
    def from_targets(cls, kind: str, targets: pd.Series, label_columns: tuple, classes: tuple):
        if not label_columns:
            raise ConfigError(
                "task.type multilabel needs data.target_columns (the 0/1 columns of train_csv)"
            )
        return cls(kind, label_columns)

    def label_names(self, targets: pd.Series) -> pd.Series:
        names = np.asarray(self.classes, dtype=object)
        return pd.Series(
            [list(names[np.asarray(row) == 1]) for row in targets], index=targets.index
        )

    def target_text(self, targets: pd.Series) -> pd.Series:
        return self.label_names(targets).map("|".join)

    def encode(self, targets: pd.Series) -> np.ndarray:
        return np.stack([np.asarray(t, dtype=np.float32) for t in targets])

    def loss(self, logits, targets, label_smoothing: float = 0.0, class_weights=None):
        soft = targets * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), soft, pos_weight=class_weights)

    def activate(self, logits):
        return logits.float().sigmoid()

    def validation_loss(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        values = np.clip(np.asarray(predictions, dtype=np.float64), EPS, 1 - EPS)
        return float(-np.mean(targets * np.log(values) + (1 - targets) * np.log(1 - values)))

    def decide(self, predictions: np.ndarray, cutpoints: list[float] | None = None) -> np.ndarray:
        return (predictions >= 0.5).astype(int)

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets.astype(int)

    def per_class_recall(self, targets: np.ndarray, decided: np.ndarray) -> dict:
        return {
            str(c): float(np.mean(decided[targets[:, i] == 1, i])) if targets[:, i].any() else None
            for i, c in enumerate(self.classes)
        }

    def submission_labels(self, decided: np.ndarray, submission_format: str) -> list:
        raise ConfigError('a multilabel task submits with submission.format = "probabilities"')

    @classmethod
    def check_submission_format(cls, submission_format: str) -> None:
        if submission_format != "probabilities":
            raise ConfigError('a multilabel task submits with submission.format = "probabilities"')

    def to_log_space(self, values: np.ndarray) -> np.ndarray:
        p = np.clip(values, EPS, 1 - EPS)
        return np.log(p) - np.log1p(-p)

    def from_log_space(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class OrdinalTask(Task):
    """Ordered integer grades: one regression output, cut into grades."""

    decision: ClassVar[str] = "cutpoints"

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def columns(self) -> list[str]:
        return ["value"]

    def encode(self, targets: pd.Series) -> np.ndarray:
        return targets.astype(np.float32).to_numpy()

    def loss(self, logits, targets, label_smoothing: float = 0.0, class_weights=None):
        return F.smooth_l1_loss(logits.float().squeeze(1), targets)

    def activate(self, logits):
        return logits.float()

    def validation_loss(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        error = np.abs(np.asarray(predictions, dtype=np.float64).reshape(-1) - targets)
        return float(np.mean(np.where(error < 1, 0.5 * error**2, error - 0.5)))  # smooth L1

    def decide(self, predictions: np.ndarray, cutpoints: list[float] | None = None) -> np.ndarray:
        grades = np.asarray(self.classes, dtype=float)
        cuts = cutpoints if cutpoints is not None else (grades[1:] + grades[:-1]) / 2
        return grades[np.searchsorted(cuts, predictions.reshape(-1))].astype(int)

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets.astype(int)

    def codes(self) -> np.ndarray:
        return np.asarray(self.classes, dtype=int)

    def submission_labels(self, decided: np.ndarray, submission_format: str) -> list:
        return [int(v) for v in decided]

    @classmethod
    def check_submission_format(cls, submission_format: str) -> None:
        if submission_format in ("probabilities", "probability"):
            raise ConfigError(
                f'submission.format "{submission_format}" needs classes, not a grade value: '
                'use "class_index" for an ordinal task'
            )

    @property
    def can_rank(self) -> bool:
        return False

    @property
    def merges_in_log_space(self) -> bool:
        return False


_CLASSES: dict[str, type[Task]] = {
    "multiclass": SingleLabelTask,
    "binary": SingleLabelTask,
    "multilabel": MultiLabelTask,
    "ordinal": OrdinalTask,
}
assert set(_CLASSES) == set(TASKS)


def task_class(kind: str) -> type[Task]:
    """The Task class of a task.type (for rules checked before any data is read)."""
    return _CLASSES[kind]


def integer_labels(classes) -> bool:
    """Class labels that are whole numbers (a class_index submission writes them as numbers)."""
    return all(isinstance(c, (int, np.integer)) or str(c).lstrip("-").isdigit() for c in classes)


def create_task(kind: str, targets: pd.Series, *, label_columns=(), classes=()) -> Task:
    """The task of a training table's target column.

    A multi-label task names its labels by label_columns (data.target_columns); otherwise the
    classes are data.classes when given (every target must be one, compared as text), else the
    targets' values sorted, numbers before strings.
    """
    return _CLASSES[kind].from_targets(kind, targets, tuple(label_columns), tuple(classes))
