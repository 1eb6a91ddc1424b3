"""Checks that a fold assignment cannot leak: no file, image or group on both sides of a split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence

import pandas as pd

from kit.errors import DataError

# A leak report names a few examples and counts the rest, so one bad folds.csv stays readable.
MAX_EXAMPLES = 3


def hash_bytes(data: bytes) -> str:
    """The content hash kit uses to call two images the same file."""
    # 16 bytes of blake2b: far faster than sha256, and collisions are out of reach for any data set.
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hashes(paths: Iterable[str]) -> list[str]:
    """Content hash of each file, in the order given."""
    hashes = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                hashes.append(hash_bytes(file.read()))
        except OSError as error:
            raise DataError(
                f"{path}: cannot read ({error.strerror}); restore the file or drop its row"
            ) from None
    return hashes


def audit_folds(items: pd.DataFrame, n_splits: int | None = None) -> list[str]:
    """One line per problem with items' `fold` column; an empty list means the split is clean."""
    missing = [c for c in ("id", "path", "target", "fold") if c not in items.columns]
    if missing:
        raise DataError(f"fold table lacks column(s) {', '.join(missing)}; run `kit folds` first")
    folds = pd.to_numeric(items["fold"], errors="coerce")
    problems = _fold_index_problems(items, folds, n_splits)
    # Rows without a usable fold cannot leak across folds; leave them out of the checks below.
    usable = items.loc[folds.notna() & (folds == folds.round())].copy()
    usable["fold"] = folds[usable.index].astype(int)
    usable["path"] = [os.path.normpath(p) for p in usable["path"]]
    problems += _same_path_problems(usable)
    problems += _same_bytes_problems(usable)
    if "group" in usable.columns:
        problems += _same_group_problems(usable)
    problems += _missing_class_problems(usable)
    return problems


def _fold_index_problems(items: pd.DataFrame, folds: pd.Series, n_splits: int | None) -> list[str]:
    problems = []
    not_integer = folds.isna() | (folds != folds.round())
    if not_integer.any():
        problems.append(
            f"{int(not_integer.sum())} row(s) have no integer fold, e.g. ids "
            f"{_examples(items.loc[not_integer, 'id'])}; give every row a fold"
        )
    present = set(folds[~not_integer].astype(int))
    if n_splits is None:
        # Negative indexes are reported as outside the range, so they do not widen it.
        n_splits = max(present, default=-1) + 1
    outside = sorted(f for f in present if not 0 <= f < n_splits)
    if outside:
        problems.append(
            f"fold index(es) {', '.join(map(str, outside))} outside 0..{n_splits - 1}; "
            f"number folds 0..{n_splits - 1}"
        )
    empty = [f for f in range(n_splits) if f not in present]
    if empty:
        problems.append(
            f"fold(s) {', '.join(map(str, empty))} of 0..{n_splits - 1} have no rows; "
            "rewrite folds.csv or lower the number of folds"
        )
    return problems


def _same_path_problems(items: pd.DataFrame) -> list[str]:
    spread = items.groupby("path")["fold"].nunique()
    leaked = spread[spread > 1].index
    if len(leaked) == 0:
        return []
    examples = [
        f"{path} in folds {_fold_list(items.loc[items['path'] == path, 'fold'])}"
        for path in leaked[:MAX_EXAMPLES]
    ]
    return [
        f"{len(leaked)} file(s) listed in more than one fold (leak), e.g. {'; '.join(examples)}; "
        "list each file once"
    ]


def _same_bytes_problems(items: pd.DataFrame) -> list[str]:
    # One row per file: a file listed twice is the same-path problem, not a second copy of it.
    files = items.drop_duplicates("path").copy()
    files["hash"] = file_hashes(files["path"])
    leaked = [rows for _, rows in files.groupby("hash", sort=False) if rows["fold"].nunique() > 1]
    if not leaked:
        return []
    examples = [
        " = ".join(f"{row.id} (fold {row.fold})" for row in rows.itertuples())
        for rows in leaked[:MAX_EXAMPLES]
    ]
    return [
        f"{len(leaked)} set(s) of byte-identical images span more than one fold (leak), e.g. "
        f"{'; '.join(examples)}; give copies one group so they share a fold, or drop the copies"
    ]


def _same_group_problems(items: pd.DataFrame) -> list[str]:
    grouped = items.loc[items["group"].notna()]
    spread = grouped.groupby("group")["fold"].nunique()
    leaked = spread[spread > 1].index
    if len(leaked) == 0:
        return []
    examples = [
        f"{group} in folds {_fold_list(grouped.loc[grouped['group'] == group, 'fold'])}"
        for group in leaked[:MAX_EXAMPLES]
    ]
    return [
        f"{len(leaked)} group(s) span more than one fold (leak), e.g. {'; '.join(examples)}; "
        "split with a group-aware splitter"
    ]


def _missing_class_problems(items: pd.DataFrame) -> list[str]:
    # Multi-label rows hold a list of classes; each class in it counts as present.
    labels = items[["fold", "target"]].explode("target").dropna(subset=["target"])
    all_classes = _sorted(labels["target"].unique())
    problems = []
    for fold, rows in labels.groupby("fold"):
        absent = [c for c in all_classes if c not in set(rows["target"])]
        if absent:
            problems.append(
                f"fold {fold}: validation part has no example of class(es) "
                f"{_examples(pd.Series(absent), limit=8)}; stratify the split or use fewer folds"
            )
    return problems


def _fold_list(folds: pd.Series) -> str:
    return ", ".join(str(f) for f in sorted(set(folds)))


def _examples(values: pd.Series, limit: int = MAX_EXAMPLES) -> str:
    shown = ", ".join(str(v) for v in values.iloc[:limit])
    hidden = len(values) - limit
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown


def _sorted(values: Sequence) -> list:
    # Integers before strings, so mixed label types still sort.
    return sorted(values, key=lambda v: (isinstance(v, str), v))
