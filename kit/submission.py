"""Submissions in the competition's own format, validated against sample_submission.csv.

submission.format says what the file holds beside the id:
- class_index: the class's integer label (digits, APTOS grades), or its position in data.classes
  when the labels are not integers;
- class_name: the class label itself (plant-seedlings species);
- probability: one column, the probability of submission.positive_class (dogs-vs-cats);
- probabilities: a column per class or label, named as in sample_submission (RANZCR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.errors import ConfigError, DataError, SubmissionError
from kit.fileio import atomic_open
from kit.task import Task

FORMATS = ("class_index", "class_name", "probability", "probabilities")


def _integer_labels(classes) -> bool:
    return all(isinstance(c, (int, np.integer)) or str(c).lstrip("-").isdigit() for c in classes)


def _examples(values, n: int = 3) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f" (+{len(values) - n} more)" if len(values) > n else "")


def validate_submission(
    path: Path,
    sample_path: Path,
    *,
    id_column: str,
    target_column: str,
    classes: list,
    format: str = "class_index",
) -> list[str]:
    """Every problem of the file, one line each; an empty list means it is valid."""
    if not Path(path).exists():
        return [f"{path} not found"]
    sample = pd.read_csv(sample_path, dtype=str)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return [f"not a readable CSV ({str(error).splitlines()[0]})"]
    problems = []
    if list(frame.columns) != list(sample.columns):
        problems.append(f"header is {','.join(frame.columns)}; expected {','.join(sample.columns)}")
    if len(frame) != len(sample):
        problems.append(f"{len(frame)} rows; expected {len(sample)} (one per test image)")
    needed = [id_column] if format == "probabilities" else [id_column, target_column]
    if any(c not in frame.columns for c in needed):
        return problems or [f"missing column {' or '.join(needed)}"]
    ids, expected = frame[id_column], sample[id_column]
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s): {_examples(duplicated)}")
    # vectorised, with the usual case (sample_submission's ids in its order) checked first: a
    # million ids take well under a second (benchmarks/ensemble_scale.py)
    differs = ids.to_numpy() != expected.to_numpy() if len(ids) == len(expected) else None
    in_order = differs is not None and not differs.any()
    missing = [] if in_order else sorted(expected[~expected.isin(ids)].unique())
    if missing:
        problems.append(f"{len(missing)} id(s) missing: {_examples(missing)}")
    extra = [] if in_order else sorted(ids[~ids.isin(expected)].unique())
    if extra:
        problems.append(f"{len(extra)} id(s) not in the test set: {_examples(extra)}")
    if differs is not None and not (duplicated.size or missing or extra or in_order):
        first = int(differs.argmax())
        problems.append(
            f"ids are not in sample_submission's order (row {first + 2} has {ids.iloc[first]},"
            f" expected {expected.iloc[first]})"
        )
    if format == "probabilities":
        value_columns = [c for c in sample.columns if c != id_column and c in frame.columns]
    else:
        value_columns = [target_column]
    for column in value_columns:
        problems += _value_problems(frame, ids, column, format, classes)
    return problems


def _value_problems(frame, ids, column: str, format: str, classes: list) -> list[str]:
    values = frame[column]
    empty = values.str.strip().isin(["", "nan", "NaN", "NA", "null", "None"])
    problems = []
    if empty.any():
        problems.append(
            f"{int(empty.sum())} empty or NaN value(s) in {column}, "
            f"e.g. for id {_examples(ids[empty])}"
        )
    present = values[~empty]
    if format in ("probability", "probabilities"):
        numbers = pd.to_numeric(present, errors="coerce")
        outside = present[numbers.isna() | (numbers < 0) | (numbers > 1)]
        if len(outside):
            problems.append(
                f"{column} must hold probabilities in [0, 1]; found {_examples(outside.unique())}"
            )
        return problems
    if format == "class_index":
        is_int = present.str.fullmatch(r"-?\d+")
        not_int = present[~is_int]
        if len(not_int):
            problems.append(
                f"{column} must hold integer class indices; found {_examples(not_int.unique())}"
            )
        present = present[is_int].astype(int).astype(str)
        if not _integer_labels(classes):
            classes = list(range(len(classes)))
    allowed = {str(c) for c in classes}
    outside = sorted(set(present.unique()) - allowed)
    if outside:
        problems.append(
            f"{column} has value(s) outside the class set: {_examples(outside)} "
            f"(classes: {_examples(sorted(allowed), 12)})"
        )
    return problems


def check_submission(competition: Competition, path: Path, classes: list | None = None) -> None:
    """Raise SubmissionError listing every problem of path (classes: the competition's own)."""
    if classes is None:
        from kit.data.layout import competition_task, read_train_items

        _, task = competition_task(competition, read_train_items(competition))
        classes = list(task.classes)
    problems = validate_submission(
        path, competition.path(competition.config.data.sample_submission), **_format(competition),
        classes=classes,
    )  # fmt: skip
    if problems:
        raise SubmissionError(str(path), problems)


def _format(competition: Competition) -> dict:
    submission = competition.config.submission
    if submission.format not in FORMATS:
        raise ConfigError(
            f"submission.format {submission.format!r} is unknown: use one of {', '.join(FORMATS)}"
        )
    return {
        "id_column": submission.id_column,
        "target_column": submission.target_column,
        "format": submission.format,
    }


def write_submission(
    competition: Competition, predictions: pd.DataFrame, task: Task, name: str
) -> Path:
    """Turn a prediction table (id + task.columns) into submissions/<name>.csv, validated first."""
    settings = _format(competition)
    sample_path = competition.path(competition.config.data.sample_submission)
    sample = pd.read_csv(sample_path, dtype={settings["id_column"]: str})
    classes = list(task.classes)
    sample_ids = sample[settings["id_column"]]
    if len(predictions) == len(sample) and (predictions["id"].to_numpy() == sample_ids).all():
        values = predictions[task.columns].to_numpy()  # already in order: skip the reindex
    else:
        indexed = predictions.set_index("id")
        missing = sample_ids[~sample_ids.isin(indexed.index)]
        if len(missing):
            raise DataError(
                f"predictions lack {len(missing)} test id(s), e.g. {_examples(missing)}: "
                "predict on the current test set again (`kit predict RUN`)"
            )
        values = indexed.loc[sample_ids, task.columns].to_numpy()
    out = sample.copy()
    for column, column_values in _submission_values(competition, sample, values, task).items():
        out[column] = column_values
    path = competition.submissions_dir / f"{name}.csv"
    with atomic_open(path) as handle:
        out.to_csv(handle, index=False)
        handle.flush()
        temp = Path(handle.name)
        problems = validate_submission(temp, sample_path, classes=classes, **settings)
        if problems:
            raise SubmissionError(str(path), problems)
    return path


def _submission_values(
    competition: Competition, sample: pd.DataFrame, values: np.ndarray, task: Task
) -> dict:
    """{column: values} of the submission from the prediction columns, in the configured format."""
    submission = competition.config.submission
    classes = list(task.classes)
    names = [str(c) for c in classes]
    if submission.format == "probabilities":
        if task.kind == "ordinal":
            raise ConfigError('submission.format "probabilities" needs classes, not a grade value')
        wanted = [c for c in sample.columns if c != submission.id_column]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ConfigError(
                f"sample_submission column(s) {_examples(unknown)} are not classes "
                f"({_examples(names, 12)}): check data.target_columns / data.classes"
            )
        return {c: np.clip(values[:, names.index(c)], 0.0, 1.0) for c in wanted}
    if submission.format == "probability":
        if submission.positive_class not in names:
            raise ConfigError(
                f"submission.positive_class {submission.positive_class!r} is not a class: "
                f"set it to one of {_examples(names, 12)}"
            )
        return {submission.target_column: values[:, names.index(submission.positive_class)]}
    decided = task.decide(values)
    if task.kind == "ordinal":
        return {submission.target_column: [int(v) for v in decided]}
    if task.kind == "multilabel":
        raise ConfigError('a multilabel task submits with submission.format = "probabilities"')
    labels = np.asarray(classes, dtype=object)[decided]
    if submission.format == "class_index":
        labels = [int(v) for v in labels] if _integer_labels(classes) else [int(i) for i in decided]
    return {submission.target_column: labels}
