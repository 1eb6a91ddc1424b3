"""Submissions in the competition's own format, validated against sample_submission.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.errors import ConfigError, DataError, SubmissionError
from kit.fileio import atomic_open
from kit.task import Task

FORMATS = ("class_index", "class_name")


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
    if id_column not in frame.columns or target_column not in frame.columns:
        return problems or [f"missing column {id_column} or {target_column}"]
    ids, expected = frame[id_column], sample[id_column]
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s): {_examples(duplicated)}")
    missing = sorted(set(expected) - set(ids))
    if missing:
        problems.append(f"{len(missing)} id(s) missing: {_examples(missing)}")
    extra = sorted(set(ids) - set(expected))
    if extra:
        problems.append(f"{len(extra)} id(s) not in the test set: {_examples(extra)}")
    if not (duplicated.size or missing or extra) and list(ids) != list(expected):
        first = next(i for i, (a, b) in enumerate(zip(ids, expected, strict=True)) if a != b)
        problems.append(
            f"ids are not in sample_submission's order (row {first + 2} has {ids.iloc[first]},"
            f" expected {expected.iloc[first]})"
        )
    values = frame[target_column]
    empty = values.str.strip().isin(["", "nan", "NaN", "NA", "null", "None"])
    if empty.any():
        problems.append(
            f"{int(empty.sum())} empty or NaN value(s) in {target_column}, "
            f"e.g. for id {_examples(ids[empty])}"
        )
    present = values[~empty]
    if format == "class_index":
        not_int = present[~present.str.fullmatch(r"-?\d+")]
        if len(not_int):
            problems.append(
                f"{target_column} must hold integer class indices; found {_examples(not_int.unique())}"
            )
        present = present[present.str.fullmatch(r"-?\d+")].astype(int).astype(str)
    allowed = {str(c) for c in classes}
    outside = sorted(set(present) - allowed)
    if outside:
        problems.append(
            f"{target_column} has value(s) outside the class set: {_examples(outside)} "
            f"(classes: {_examples(sorted(allowed), 12)})"
        )
    return problems


def check_submission(competition: Competition, path: Path, classes: list) -> None:
    """Raise SubmissionError listing every problem of path."""
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
    indexed = predictions.set_index("id")
    missing = sample[settings["id_column"]][~sample[settings["id_column"]].isin(indexed.index)]
    if len(missing):
        raise DataError(
            f"predictions lack {len(missing)} test id(s), e.g. {_examples(missing)}: "
            "predict on the current test set again (`kit predict RUN`)"
        )
    values = indexed.loc[sample[settings["id_column"]], task.columns].to_numpy()
    decided = task.decide(values)
    labels = decided if task.kind == "ordinal" else np.asarray(classes, dtype=object)[decided]
    if settings["format"] == "class_index":
        labels = [int(label) for label in labels]
    out = sample.copy()
    out[settings["target_column"]] = labels
    path = competition.submissions_dir / f"{name}.csv"
    with atomic_open(path) as handle:
        out.to_csv(handle, index=False)
        handle.flush()
        temp = Path(handle.name)
        problems = validate_submission(temp, sample_path, classes=classes, **settings)
        if problems:
            raise SubmissionError(str(path), problems)
    return path
