"""The k-fold driver: one run = one config trained on every fold, with OOF predictions and CV."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.config import dump_toml
from kit.data.folds import folds_hash, training_table
from kit.errors import KitError
from kit.fileio import append_jsonl, write_csv, write_json, write_text
from kit.metrics import get_metric
from kit.task import Task


def default_run_name(competition: Competition) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{competition.config.model.name}-{stamp}"


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True,
            timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def train_run(
    competition: Competition,
    run: str | None = None,
    *,
    folds: list[int] | None = None,
    progress: bool = True,
) -> dict:
    """Train every fold (or the listed ones) into runs/<run>/; return metrics.json's content."""
    import torch

    from kit.device import pick_device
    from kit.train.loop import train_fold

    config = competition.config
    table, task = training_table(competition)
    get_metric(config.metric.name, task.kind)  # a metric that cannot score the task fails now
    all_folds = sorted(table["fold"].unique().tolist())
    chosen = all_folds if folds is None else folds
    unknown = sorted(set(chosen) - set(all_folds))
    if unknown:
        raise KitError(f"--folds {unknown} not in folds.csv (folds: {all_folds})")
    run = run or default_run_name(competition)
    run_dir = competition.run_dir(run, must_exist=False)
    if (run_dir / "config.toml").exists():
        raise KitError(f"run '{run}' exists in {run_dir}: choose another --name")
    run_dir.mkdir(parents=True)
    write_text(run_dir / "config.toml", dump_toml(config.to_dict()))
    device = pick_device(config.train.device)
    started = time.time()
    info = {
        "run": run,
        "model": config.model.name,
        "task": task.kind,
        "classes": list(task.classes),
        "folds_hash": folds_hash(table),
        "device": str(device),
        "torch": torch.__version__,
        "git_commit": git_commit(competition.root),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json(run_dir / "run.json", info)
    log_path = run_dir / "log.jsonl"
    append_jsonl(log_path, {"event": "start", **info})

    oof = pd.DataFrame(0.0, index=table.index, columns=task.columns)
    results = []
    for fold in chosen:
        valid = table["fold"] == fold
        result = train_fold(
            config, fold, table[~valid].reset_index(drop=True), table[valid].reset_index(drop=True),
            task, run_dir / f"fold{fold}", device, root=competition.root, log_path=log_path,
            progress=progress,
        )  # fmt: skip
        oof.loc[valid] = result.probs
        results.append(result)
        append_jsonl(
            log_path,
            {"event": "fold", "fold": fold, "score": result.score, "epoch": result.epoch,
             "seconds": round(result.seconds, 3)},
        )  # fmt: skip

    scored = table["fold"].isin(chosen)
    oof_frame = pd.concat([table.loc[scored, ["id", "fold"]], oof[scored]], axis=1)
    write_csv(run_dir / "oof.csv", oof_frame)
    metrics = score_oof(competition, oof_frame, table, task)
    metrics.update(
        {
            "folds": [r.score for r in results],
            "fold_ids": [r.fold for r in results],
            "best_epochs": [r.epoch for r in results],
            "cv_std": float(np.std([r.score for r in results])),
            "seconds": round(time.time() - started, 1),
        }
    )
    write_json(run_dir / "metrics.json", metrics)
    append_jsonl(log_path, {"event": "end", "cv": metrics["cv"], "seconds": metrics["seconds"]})
    return {"run": run, "run_dir": str(run_dir), **metrics}


def score_oof(
    competition: Competition, predictions: pd.DataFrame, table: pd.DataFrame, task: Task
) -> dict:
    """The competition metric over all OOF rows at once, plus per-class recall."""
    metric = get_metric(competition.config.metric.name, task.kind)
    targets = task.encode(table.set_index("id").loc[predictions["id"], "target"])
    values = predictions[task.columns].to_numpy()
    decided = task.decide(values)
    if task.kind == "multilabel":
        per_class = {
            str(c): float(np.mean(decided[targets[:, i] == 1, i])) if targets[:, i].any() else None
            for i, c in enumerate(task.classes)
        }
    else:
        truth = task.encode(pd.Series(task.classes)) if task.kind == "ordinal" else None
        per_class = {}
        for i, c in enumerate(task.classes):
            code = truth[i] if truth is not None else i
            rows = targets == code
            per_class[str(c)] = float(np.mean(decided[rows] == code)) if rows.any() else None
    return {
        "metric": metric.name,
        "cv": metric.score(task, targets, values),
        "per_class": per_class,
    }


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
