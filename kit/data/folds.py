"""folds.csv: which fold validates each training image; written once, read by every run.

The splitter follows the data: StratifiedKFold for one label per image, StratifiedGroupKFold when
a group is configured (folds.group_column or folds.group_regex: a patient, a person), and iterative
stratification for multi-label targets (over groups when there are groups).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from kit.competition import Competition
from kit.data.audit import audit_folds, duplicate_groups
from kit.data.index import bad_images, index_files
from kit.data.layout import competition_task, read_csv_table, read_train_items
from kit.errors import DataError, KitError
from kit.fileio import write_csv
from kit.task import Task


def make_folds(competition: Competition, *, force: bool = False) -> pd.DataFrame:
    """Split the training table into folds.csv; refuses to overwrite it unless forced."""
    path = competition.folds_csv
    if path.exists() and not force:
        raise KitError(
            f"{path} exists and every run reads it: pass --force to write new folds "
            "(runs trained on the old folds can then no longer be blended)"
        )
    settings = competition.config.folds
    items, task = competition_task(competition, read_train_items(competition))
    groups, joined = join_duplicates(items, near=settings.near_duplicates)
    fold = assign_folds(task, items["target"], groups, settings.n_splits, settings.seed)
    folds = pd.DataFrame({"id": items["id"], "fold": fold})
    folds["target"] = task.target_text(items["target"]).to_numpy()
    if groups is not None:
        folds["group"] = groups.to_numpy()
    write_csv(path, folds)

    index_files(competition.root, items["path"])  # scanned once here, reused by every command
    folds.attrs["duplicates"] = joined  # what join_duplicates merged, for the command to say
    return folds


def join_duplicates(items: pd.DataFrame, *, near: bool = False) -> tuple[pd.Series | None, dict]:
    """The group of each training row: its declared group (folds.group_column / group_regex)
    joined with the groups of its byte-identical copies (and, with near, its perceptual-hash
    neighbours), so copies never sit on both sides of a split. None when there is nothing to
    group: no declared groups and no duplicates."""
    declared = items["group"].tolist() if "group" in items.columns else None
    names, joined = duplicate_groups(
        items["path"].tolist(), declared, names=items["id"].tolist(), near=near
    )
    copies = joined["byte_identical_joined"] + joined["near_duplicate_joined"]
    if declared is None and not copies:
        return None, joined
    return pd.Series(names, index=items.index, name="group"), joined


def assign_folds(
    task: Task, targets: pd.Series, groups: pd.Series | None, n_splits: int, seed: int
) -> np.ndarray:
    """The fold of each row: stratified by target, never splitting a group."""
    if n_splits < 2:
        raise DataError(f"folds.n_splits = {n_splits}: use at least 2 folds")
    if groups is not None and groups.nunique() < n_splits:
        raise DataError(
            f"only {groups.nunique()} group(s) for folds.n_splits = {n_splits}: lower n_splits "
            "or check folds.group_column / folds.group_regex"
        )
    if task.multi_label:
        labels = np.stack([np.asarray(t, dtype=np.int64) for t in targets])
        return iterative_folds(labels, groups, n_splits, seed)
    counts = targets.value_counts()
    small = counts[counts < n_splits]
    if len(small):
        raise DataError(
            f"class {_plain(small.index[0])!r} has {small.iloc[0]} image(s), fewer than "
            f"folds.n_splits = {n_splits}: lower folds.n_splits in kit.toml"
        )
    fold = np.zeros(len(targets), dtype=int)
    if groups is None:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(targets, targets)
    else:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(targets, targets.astype(str), groups)
    for k, (_, valid) in enumerate(splits):
        fold[valid] = k
    return fold


def iterative_folds(
    labels: np.ndarray, groups: pd.Series | None, n_splits: int, seed: int
) -> np.ndarray:
    """Iterative stratification (Sechidis et al., 2011) of 0/1 label rows, whole groups at once.

    The rarest label is placed first, each unit (a row, or a group's rows) into the fold that
    still wants most of that label, so every fold gets its share of every label.
    """
    rng = np.random.default_rng(seed)
    unit_of_row = np.arange(len(labels)) if groups is None else pd.factorize(groups)[0]
    n_units = unit_of_row.max() + 1
    unit_labels = np.zeros((n_units, labels.shape[1]), dtype=np.int64)
    np.add.at(unit_labels, unit_of_row, labels)
    unit_sizes = np.bincount(unit_of_row, minlength=n_units)
    wanted_labels = np.tile(unit_labels.sum(axis=0) / n_splits, (n_splits, 1))
    wanted_sizes = np.full(n_splits, unit_sizes.sum() / n_splits)
    unit_fold = np.full(n_units, -1)
    remaining = np.ones(n_units, dtype=bool)
    while remaining.any():
        left = unit_labels[remaining].sum(axis=0)
        if left.any():
            label = int(np.argmin(np.where(left > 0, left, np.inf)))
            chosen = np.flatnonzero(remaining & (unit_labels[:, label] > 0))
        else:  # units without any label: balance the fold sizes
            label, chosen = None, np.flatnonzero(remaining)
        for unit in rng.permutation(chosen):
            want = wanted_labels[:, label] if label is not None else wanted_sizes
            best = np.flatnonzero(want == want.max())
            if len(best) > 1:
                sizes = wanted_sizes[best]
                best = best[sizes == sizes.max()]
            fold = int(rng.choice(best))
            unit_fold[unit] = fold
            wanted_labels[fold] -= unit_labels[unit]
            wanted_sizes[fold] -= unit_sizes[unit]
            remaining[unit] = False
    return unit_fold[unit_of_row]


def read_folds(competition: Competition) -> pd.DataFrame:
    path = competition.folds_csv
    if not path.exists():
        raise KitError(f"{path} not found: run `kit folds -C {competition.root}` first")

    fix = f"rewrite it with `kit folds -C {competition.root} --force`"
    table = read_csv_table(path, "folds table", fix, dtype={"id": str})
    lacking = [c for c in ("id", "fold") if c not in table.columns]
    if lacking or not pd.api.types.is_integer_dtype(table["fold"]):
        raise KitError(f"{path} is not a folds table (it needs id and integer fold columns): {fix}")
    return table


def folds_hash(folds: pd.DataFrame) -> str:
    """Identifies a split: runs with the same hash can be blended on OOF."""
    text = folds[["id", "fold"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_table(
    competition: Competition, *, check_images: bool = True
) -> tuple[pd.DataFrame, Task]:
    """Training items joined with folds.csv, and the task (its classes in their fixed order).

    Undecodable images fail here, listed; with data.skip_bad they are left out instead and
    `table.attrs["skipped_bad"]` counts them. The check reads the file index (kit.data.index:
    only changed files are looked at again); check_images=False skips it, for the commands that
    never read pixels (a blend of prediction tables).
    """
    items = read_train_items(competition, check_files=check_images)
    items, task = competition_task(competition, items)
    folds = read_folds(competition)
    merged = items.merge(folds[["id", "fold"]], on="id", how="left")
    if merged["fold"].isna().any():
        missing = merged.loc[merged["fold"].isna(), "id"].head(3).tolist()
        raise DataError(
            f"{competition.folds_csv} lacks training ids such as {', '.join(missing)}: "
            "the data changed since; run `kit folds --force`"
        )
    merged["fold"] = merged["fold"].astype(int)
    bad = bad_images(competition.root, merged["path"]) if check_images else {}
    if bad and not competition.config.data.skip_bad:
        shown = "; ".join(f"{path} ({why})" for path, why in list(bad.items())[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} training image(s) cannot be decoded: {shown}{more}; replace them, "
            "or leave them out with `kit train --skip-bad` (data.skip_bad = true)"
        )
    if bad:
        merged = merged[~merged["path"].isin(bad)].reset_index(drop=True)
    merged.attrs["skipped_bad"] = len(bad)
    return merged, task


def check_folds(competition: Competition) -> list[str]:
    """Leaks and gaps in folds.csv: shared files or image bytes, shared groups, missing classes."""
    table, task = training_table(competition)
    table = table.assign(target=task.label_names(table["target"]))  # names, not 0/1 rows
    return audit_folds(table, competition.config.folds.n_splits)


def bad_training_images(competition: Competition) -> dict[str, str]:
    """{path: reason} of the training images that cannot be decoded."""
    return bad_images(competition.root, read_train_items(competition)["path"])


def _plain(value):
    """A numpy scalar as the Python value it holds, so messages read 7, not np.int64(7)."""
    return value.item() if isinstance(value, np.generic) else value
