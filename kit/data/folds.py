"""folds.csv: which fold validates each training image; written once, read by every run."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.layout import read_train_items
from kit.errors import DataError, KitError
from kit.fileio import write_csv
from kit.task import Task, create_task


def make_folds(competition: Competition, *, force: bool = False) -> pd.DataFrame:
    """Stratified k-fold over the training table; refuses to overwrite folds.csv unless forced."""
    from sklearn.model_selection import StratifiedKFold

    path = competition.folds_csv
    if path.exists() and not force:
        raise KitError(
            f"{path} exists and every run reads it: pass --force to write new folds "
            "(runs trained on the old folds can then no longer be blended)"
        )
    settings = competition.config.folds
    items = read_train_items(competition)
    counts = items["target"].value_counts()
    small = counts[counts < settings.n_splits]
    if len(small):
        raise DataError(
            f"class {small.index[0]!r} has {small.iloc[0]} image(s), fewer than "
            f"folds.n_splits = {settings.n_splits}: lower folds.n_splits in kit.toml"
        )
    splitter = StratifiedKFold(settings.n_splits, shuffle=True, random_state=settings.seed)
    fold = np.zeros(len(items), dtype=int)
    for k, (_, valid) in enumerate(splitter.split(items, items["target"])):
        fold[valid] = k
    folds = pd.DataFrame({"id": items["id"], "fold": fold, "target": items["target"]})
    write_csv(path, folds)
    return folds


def read_folds(competition: Competition) -> pd.DataFrame:
    path = competition.folds_csv
    if not path.exists():
        raise KitError(f"{path} not found: run `kit folds -C {competition.root}` first")
    return pd.read_csv(path, dtype={"id": str})


def folds_hash(folds: pd.DataFrame) -> str:
    """Identifies a split: runs with the same hash can be blended on OOF."""
    text = folds[["id", "fold"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_table(competition: Competition) -> tuple[pd.DataFrame, Task]:
    """Training items joined with folds.csv, and the task (its classes in their fixed order)."""
    items = read_train_items(competition)
    folds = read_folds(competition)
    merged = items.merge(folds[["id", "fold"]], on="id", how="left")
    if merged["fold"].isna().any():
        missing = merged.loc[merged["fold"].isna(), "id"].head(3).tolist()
        raise DataError(
            f"{competition.folds_csv} lacks training ids such as {', '.join(missing)}: "
            "the data changed since; run `kit folds --force`"
        )
    merged["fold"] = merged["fold"].astype(int)
    return merged, create_task(competition.config.task.type, items["target"])


def check_folds(competition: Competition) -> list[str]:
    """Leaks and gaps in folds.csv: shared files or image bytes, shared groups, missing classes."""
    from kit.data.audit import audit_folds

    table, _ = training_table(competition)
    return audit_folds(table, competition.config.folds.n_splits)
