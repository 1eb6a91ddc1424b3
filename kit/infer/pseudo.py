"""Pseudo-labels, the optional second stage: labels for confident test images from stage-1 runs.

A test image's label comes from the stage-1 fold ensembles (each run's test.csv, averaged over the
runs); it is kept when its top probability reaches the threshold. Soft labels keep the whole
probability row; hard labels keep the top class. In soft mode each training image also gets a soft
label, and it comes only from OOF predictions: from the fold model that did not train on it.
pseudo/<name>/labels.csv holds the rows (id, path, source, then p_<class>... or target) and
pseudo/<name>/stage1.json records which stage-1 runs made them, so a stage-2 run can name them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.folds import training_table
from kit.data.layout import read_test_items
from kit.errors import ConfigError, KitError
from kit.fileio import write_csv, write_json
from kit.run import check_prediction_ids, read_predictions


def make_pseudo_labels(
    competition: Competition,
    runs: list[str],
    name: str,
    *,
    threshold: float = 0.9,
    soft: bool = True,
) -> dict:
    """Write pseudo/<name>/labels.csv and stage1.json; return the counts and paths."""
    out_dir = competition.pseudo_set_dir(name)
    if not 0 < threshold <= 1:
        raise KitError(f"--threshold {threshold}: give a probability in (0, 1], e.g. 0.9")
    if not runs:
        raise KitError("name at least one stage-1 run")
    table, task = training_table(competition)
    if not task.single_label:
        raise ConfigError(
            f"pseudo-labels need a multiclass or binary task, not task.type {task.kind!r}"
        )
    test_items = read_test_items(competition)
    tests, oofs, hashes = [], [], set()
    for run in runs:
        opened = competition.run(run)
        info = opened.info
        if info["classes"] != list(task.classes):
            raise KitError(f"run '{run}' was trained on other classes than the data has now")
        hashes.add(info["folds_hash"])
        test = read_predictions(opened.test_path, task.columns, run)
        check_prediction_ids(
            opened.test_path, test["id"], test_items["id"], "sample_submission", run
        )
        tests.append(test.set_index("id").loc[test_items["id"], task.columns].to_numpy())
        if soft:
            oofs.append(read_predictions(opened.oof(), task.columns, run).set_index("id"))
    probs = np.mean(tests, axis=0)
    top = probs.max(axis=1)
    confident = top >= threshold
    rows = test_items.loc[confident, ["id", "path"]].reset_index(drop=True)
    rows.insert(2, "source", "test")
    if soft:
        rows = pd.concat([rows, pd.DataFrame(probs[confident], columns=task.columns)], axis=1)
        if len(hashes) > 1:
            raise KitError(
                f"runs {', '.join(runs)} were trained on different folds: a training image's soft "
                "label must come from models that did not see it; use runs of one folds.csv"
            )
        ids = oofs[0].index
        for run, oof in zip(runs[1:], oofs[1:], strict=True):
            check_prediction_ids(
                f"runs/{run}/oof", oof.index.to_series(), ids.to_series(), runs[0], run
            )
        oof_mean = np.mean([o.loc[ids, task.columns].to_numpy() for o in oofs], axis=0)
        train = table.set_index("id").loc[ids, ["path"]].reset_index()
        train.insert(2, "source", "train")
        train = pd.concat([train, pd.DataFrame(oof_mean, columns=task.columns)], axis=1)
        rows = pd.concat([rows, train], ignore_index=True)
    else:
        rows["target"] = np.asarray(task.classes, dtype=object)[probs[confident].argmax(axis=1)]
    # relative to the competition folder, so the folder can move (or be copied to a kernel)
    rows["path"] = [_relative(competition, path) for path in rows["path"]]
    quantiles = {
        f"q{int(q * 100)}": round(float(np.quantile(top, q)), 5) for q in CONFIDENCE_QUANTILES
    }
    write_csv(out_dir / "labels.csv", rows)
    record = {
        "name": name,
        "stage1_runs": runs,
        "threshold": threshold,
        "soft": soft,
        "test_images": int(confident.sum()),
        "test_total": len(test_items),
        "train_images": int((rows["source"] == "train").sum()),
        "confidence_quantiles": quantiles,  # of the top probability over all test images
        "confidence_max": round(float(top.max()), 5) if len(top) else None,
    }
    write_json(out_dir / "stage1.json", record)
    warning = None
    if not record["test_images"]:
        warning = (
            f"no test image reaches --threshold {threshold} (the most confident has "
            f"{record['confidence_max']}); lower it, e.g. --threshold {quantiles['q90']} keeps "
            "about a tenth of the test set"
        )
    return {**record, "labels_csv": str(out_dir / "labels.csv"), "warning": warning}


CONFIDENCE_QUANTILES = (0.1, 0.5, 0.9, 0.99)  # of the test images' top probability


def _relative(competition: Competition, path: str) -> str:
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(competition.root).as_posix()
    except ValueError:  # data linked in from elsewhere stays absolute
        return str(resolved)


def read_pseudo_labels(competition: Competition, name: str, task) -> dict:
    """A stage-2 run's extra training data from pseudo/<name>/: test rows with their targets
    (soft rows, or one-hot rows of hard labels), training images' OOF soft labels, stage1.json."""
    out_dir = competition.pseudo_set_dir(name, "train.pseudo")
    labels_csv, stage1_json = out_dir / "labels.csv", out_dir / "stage1.json"
    if not labels_csv.exists() or not stage1_json.exists():
        raise ConfigError(
            f"train.pseudo = {name!r}: {labels_csv} not found; make it with "
            f'`kit pseudo RUN... --name {name}` or set train.pseudo = ""'
        )
    rows = pd.read_csv(labels_csv, dtype={"id": str})
    record = json.loads(stage1_json.read_text())
    soft = bool(record.get("soft"))
    if soft and not set(task.columns) <= set(rows.columns):
        raise KitError(f"{labels_csv} was made for other classes: run `kit pseudo` again")
    test = rows[rows["source"] == "test"].reset_index(drop=True)
    test["path"] = [str(competition.root / path) for path in test["path"]]  # absolute stays
    if test.empty:
        warnings.warn(
            f"train.pseudo = {name!r}: {labels_csv} holds 0 pseudo-labelled test images, so stage "
            "2 adds none; make the set again with a lower `kit pseudo --threshold`",
            stacklevel=2,
        )
    if soft:
        test_targets = test[task.columns].to_numpy(dtype=np.float32)
    else:
        index = {str(c): i for i, c in enumerate(task.classes)}
        codes = test["target"].astype(str).map(index)
        if codes.isna().any():
            raise KitError(
                f"{labels_csv} holds labels outside the class set: run `kit pseudo` again"
            )
        test_targets = np.eye(len(task.classes), dtype=np.float32)[codes.to_numpy(dtype=int)]
    train = rows[rows["source"] == "train"].set_index("id")
    return {
        "test_items": test[["id", "path"]],
        "test_targets": test_targets,
        "train_soft": train[task.columns] if soft else None,
        "stage1": record,
    }


def stage2_targets(task, train_items: pd.DataFrame, pseudo: dict, weight: float):
    """One fold's training set for stage 2: its images + the pseudo-labelled test images, with
    soft target rows. A training image's soft part is its OOF row, from a model that never saw it."""
    hard = np.eye(len(task.classes), dtype=np.float32)[task.encode(train_items["target"])]
    targets = hard
    if pseudo["train_soft"] is not None:
        soft = pseudo["train_soft"].reindex(train_items["id"]).to_numpy(dtype=np.float32)
        known = ~np.isnan(soft).any(axis=1)
        targets = hard.copy()
        targets[known] = (1 - weight) * hard[known] + weight * soft[known]
    test = pseudo["test_items"].assign(target=task.classes[0])  # placeholder; targets are rows
    items = pd.concat([train_items[["id", "path", "target"]], test], ignore_index=True)
    return items, np.concatenate([targets, pseudo["test_targets"]]).astype(np.float32)
