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

from kit.choices import SubmissionFormat, choices
from kit.competition import Competition
from kit.data.layout import competition_task, read_train_items
from kit.errors import ConfigError, DataError, SubmissionError, examples
from kit.fastcsv import write_probabilities
from kit.fileio import atomic_open, count_header_fields
from kit.names import check_name, ensure_inside
from kit.task import Task, create_task, integer_labels

FORMATS = choices(SubmissionFormat)


def _clip(value, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# a submission holds what sample_submission holds, with longer numbers at most: a file this many
# times larger (plus a margin for tiny samples) is refused before it is parsed
SIZE_FACTOR = 50
SIZE_MARGIN = 1 << 20  # bytes


def normalise_labels(values: pd.Series, integers: bool) -> pd.Series:
    """The one reading of submitted labels, shared by the validator and the local scorer:
    surrounding blanks dropped; with integer labels, '09' and '9' are the same label."""
    values = values.astype(str).str.strip()
    if not integers:
        return values
    is_int = values.str.fullmatch(r"[-+]?\d{1,18}")
    return values.where(~is_int, values[is_int].astype("int64").astype(str))


def read_sample(sample_path: Path, id_column: str | None = None) -> pd.DataFrame:
    """sample_submission as strings; a missing, empty or unreadable one is a DataError.

    With id_column, only that column is parsed and the others come back empty (NaN): all that
    validation and a probabilities submission use (a million ids read in half the time)."""
    sample_path = Path(sample_path)
    if not sample_path.is_file():
        raise DataError(
            f"sample_submission {sample_path} not found: run `kit download` or fix "
            "data.sample_submission in kit.toml"
        )
    try:
        sample = _read_sample_ids(sample_path, id_column)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(
            f"sample_submission {sample_path} is not a readable CSV "
            f"({_first_line(error)}): download the data again"
        ) from None
    if sample.empty:
        raise DataError(f"sample_submission {sample_path} has no rows: download the data again")
    return sample


def _read_sample_ids(sample_path: Path, id_column: str | None) -> pd.DataFrame:
    """read_sample's parse: every column, or only id_column with the others empty."""
    if id_column is None:
        return pd.read_csv(sample_path, dtype=str)
    header = pd.read_csv(sample_path, dtype=str, nrows=0).columns
    if id_column not in header:
        return pd.read_csv(sample_path, dtype=str)  # its errors are the full read's
    return pd.read_csv(sample_path, dtype=str, usecols=[id_column]).reindex(columns=header)


def _header(columns, n: int = 12) -> str:
    """A header as written, capped: a file with a million columns gets a short line."""
    columns = [str(c)[:40] for c in columns]
    more = f" (+{len(columns) - n} more columns)" if len(columns) > n else ""
    return ",".join(columns[:n]) + more


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:160]


def _file_problem(path: Path, sample_path: Path) -> str | None:
    """Why path cannot be a submission before reading it (absent, a folder, far too large)."""
    if not path.exists():
        return f"{path} not found"
    if not path.is_file():
        return f"{path} is not a file (a folder?): give the submission's CSV file"
    size, sample_size = path.stat().st_size, Path(sample_path).stat().st_size
    if size > SIZE_FACTOR * sample_size + SIZE_MARGIN:
        return (
            f"{size:,} bytes, far larger than sample_submission ({sample_size:,} bytes): "
            "not read; write the submission in sample_submission's format"
        )
    fields, expected = count_header_fields(path), count_header_fields(sample_path)
    if fields > 2 * expected + 100:  # parsing a huge header takes minutes: refuse it first
        return (
            f"header has {fields:,} columns; expected {expected} (as sample_submission): not "
            "read; write the submission in sample_submission's format"
        )
    return None


def validate_submission(
    path: Path,
    sample_path: Path,
    *,
    id_column: str,
    target_column: str,
    classes: list,
    format: str = "class_index",
    sample: pd.DataFrame | None = None,
) -> list[str]:
    """Every problem of the file, one line each; an empty list means it is valid. sample:
    sample_path as read_sample read it, when the caller has it already."""
    path = Path(path)
    sample = read_sample(sample_path, id_column) if sample is None else sample
    refused = _file_problem(path, sample_path)
    if refused:
        return [refused]
    frame = _read_probabilities(path, sample, id_column, format)
    try:
        if frame is None:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return [f"not a readable CSV ({_first_line(error)})"]
    problems = []
    if list(frame.columns) != list(sample.columns):
        problems.append(f"header is {_header(frame.columns)}; expected {_header(sample.columns)}")
    if len(frame) != len(sample):
        problems.append(f"{len(frame)} rows; expected {len(sample)} (one per test image)")
    needed = [id_column] if format == "probabilities" else [id_column, target_column]
    if any(c not in frame.columns for c in needed):
        return problems or [f"missing column {' or '.join(needed)}"]
    ids, expected = frame[id_column], sample[id_column]
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s): {examples(duplicated)}")
    # vectorised, with the usual case (sample_submission's ids in its order) checked first: a
    # million ids take well under a second (benchmarks/ensemble_scale.py)
    differs = ids.to_numpy() != expected.to_numpy() if len(ids) == len(expected) else None
    in_order = differs is not None and not differs.any()
    missing = [] if in_order else sorted(expected[~expected.isin(ids)].unique())
    if missing:
        problems.append(f"{len(missing)} id(s) missing: {examples(missing)}")
    extra = [] if in_order else sorted(ids[~ids.isin(expected)].unique())
    if extra:
        problems.append(f"{len(extra)} id(s) not in the test set: {examples(extra)}")
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


def _read_probabilities(path: Path, sample: pd.DataFrame, id_column: str, format: str):
    """The fast path of validate_submission for probability formats: the file read with its
    value columns as floats by pandas' C parser, or None (read it as text, check each value)
    unless its header is sample_submission's and every value is a finite number in [0, 1].
    A file this accepts is one the text checks find no value problem in (tests/test_fastcsv.py
    compares the two paths); every problem is reported by the text checks, word for word."""
    if format not in ("probability", "probabilities") or id_column not in sample.columns:
        return None
    value_columns = [c for c in sample.columns if c != id_column]
    try:
        header = pd.read_csv(path, nrows=0, dtype=str)
        if list(header.columns) != list(sample.columns):
            return None
        frame = pd.read_csv(
            path,
            dtype={id_column: str, **dict.fromkeys(value_columns, np.float64)},
            keep_default_na=False,
            na_values=[],
        )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None  # e.g. a value that is no number: the text checks name it
    values = frame[value_columns].to_numpy(dtype=np.float64)
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        return None
    return frame


def _value_problems(frame, ids, column: str, format: str, classes: list) -> list[str]:
    values = frame[column]
    if pd.api.types.is_float_dtype(values.dtype):  # _read_probabilities checked every value
        return []
    empty = values.str.strip().isin(["", "nan", "NaN", "NA", "null", "None"])
    problems = []
    if empty.any():
        problems.append(
            f"{int(empty.sum())} empty or NaN value(s) in {column}, "
            f"e.g. for id {examples(ids[empty])}"
        )
    present = values[~empty]
    if format in ("probability", "probabilities"):
        numbers = pd.to_numeric(present, errors="coerce")
        outside = present[numbers.isna() | (numbers < 0) | (numbers > 1)]
        if len(outside):
            problems.append(
                f"{column} must hold probabilities in [0, 1]; found {examples(outside.unique())}"
            )
        return problems
    if format == "class_index":
        present = normalise_labels(present, integers=True)
        is_int = present.str.fullmatch(r"-?\d{1,18}")
        not_int = present[~is_int]
        if len(not_int):
            problems.append(
                f"{column} must hold integer class indices; found {examples(not_int.unique())}"
            )
        present = present[is_int]
        if not integer_labels(classes):
            classes = list(range(len(classes)))
    else:
        present = normalise_labels(present, integers=integer_labels(classes))
    allowed = {str(c) for c in classes}
    outside = sorted(set(present.unique()) - allowed)
    if outside:
        problems.append(
            f"{column} has value(s) outside the class set: {examples(outside)} "
            f"(classes: {examples(sorted(allowed), 12)})"
        )
    return problems


def check_submission(competition: Competition, path: Path, classes: list | None = None) -> None:
    """Raise SubmissionError listing every problem of path (classes: the competition's own)."""
    if classes is None:
        classes = competition_classes(competition)
    problems = validate_submission(
        path,
        competition.path(competition.config.data.sample_submission),
        **_format(competition),
        classes=classes,
    )
    if problems:
        raise SubmissionError(str(path), problems)


def competition_classes(competition: Competition) -> list:
    """The class set a submission is checked against, without touching the training images
    (validate and submit work before the images are downloaded): data.classes, else the labels
    of train_csv or folds.csv, else the training items."""
    data, kind = competition.config.data, competition.config.task.type
    if data.target_columns:  # multi-label (kit.toml allows them for no other task)
        return list(data.target_columns)
    if data.classes:
        return list(data.classes)
    sources = [(competition.folds_csv, "target")]
    if data.layout == "csv" and not data.target_columns:
        sources.insert(0, (competition.path(data.train_csv), data.target_column))
    for table, column in sources:
        if not table.is_file() or count_header_fields(table) > 10_000:
            continue  # absent, or hostile: the full read below says what is wrong
        try:
            labels = pd.read_csv(table, usecols=[column])[column]
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue  # not usable: the next source, or the full read, says what is wrong
        if len(labels):
            return list(create_task(kind, labels).classes)
    _, task = competition_task(competition, read_train_items(competition))
    return list(task.classes)


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
    competition: Competition,
    predictions: pd.DataFrame,
    task: Task,
    name: str,
    *,
    sample_ids: pd.DataFrame | None = None,
) -> Path:
    """Turn a prediction table (id + task.columns) into submissions/<name>.csv, validated first.

    sample_ids: read_sample(sample_submission, id_column), when the caller has read it already."""
    settings = _format(competition)
    sample_path = competition.path(competition.config.data.sample_submission)
    # a probabilities submission replaces every column but the id: parse only that
    only_ids = settings["format"] == "probabilities"
    if only_ids and sample_ids is not None:
        sample = sample_ids
    else:
        sample = read_sample(sample_path, settings["id_column"] if only_ids else None)
    classes = list(task.classes)
    sample_ids = sample[settings["id_column"]]
    if len(predictions) == len(sample) and (predictions["id"].to_numpy() == sample_ids).all():
        values = predictions[task.columns].to_numpy()  # already in order: skip the reindex
    else:
        indexed = predictions.set_index("id")
        missing = sample_ids[~sample_ids.isin(indexed.index)]
        if len(missing):
            raise DataError(
                f"predictions lack {len(missing)} test id(s), e.g. {examples(missing)}: "
                "predict on the current test set again (`kit predict RUN`)"
            )
        values = indexed.loc[sample_ids, task.columns].to_numpy()
    out = sample.copy()
    for column, column_values in _submission_values(competition, sample, values, task).items():
        out[column] = column_values
    path = competition.submissions_dir / f"{check_name(name, 'submission')}.csv"
    ensure_inside(path.parent, competition.root)
    with atomic_open(path) as handle:
        if not write_probabilities(handle, out):  # probabilities at 7 digits, else pandas
            out.to_csv(handle, index=False)
        handle.flush()
        temp = Path(handle.name)
        problems = validate_submission(
            temp, sample_path, classes=classes, sample=sample, **settings
        )
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
    task.check_submission_format(submission.format)
    if submission.format == "probabilities":
        wanted = [c for c in sample.columns if c != submission.id_column]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ConfigError(
                f"sample_submission column(s) {examples(unknown)} are not classes "
                f"({examples(names, 12)}): check data.target_columns / data.classes"
            )
        return {c: np.clip(values[:, names.index(c)], 0.0, 1.0) for c in wanted}
    if submission.format == "probability":
        if submission.positive_class not in names:
            raise ConfigError(
                f"submission.positive_class {submission.positive_class!r} is not a class: "
                f"set it to one of {examples(names, 12)}"
            )
        return {submission.target_column: values[:, names.index(submission.positive_class)]}
    labels = task.submission_labels(task.decide(values), submission.format)
    return {submission.target_column: labels}
