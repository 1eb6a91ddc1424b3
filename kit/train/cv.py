"""The k-fold driver: one run = one config trained on every fold, with OOF predictions and CV."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.config import dump_toml
from kit.data.folds import folds_hash, training_table
from kit.errors import ConfigError, KitError
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


# what may differ when a run is resumed: how it is predicted, submitted or loaded, not trained
RESUME_IGNORES = {"competition", "predict", "submission", "kernel", ("train", "num_workers")}


def config_changes(before: dict, after: dict) -> list[str]:
    """'section.key: old -> new' for every training field that differs."""
    changes = []
    for section, values in after.items():
        if section in RESUME_IGNORES:
            continue
        for key, value in values.items():
            old = before.get(section, {}).get(key)
            if (section, key) not in RESUME_IGNORES and old != value:
                changes.append(f"{section}.{key}: {old!r} -> {value!r}")
    return changes


def check_resumable(competition: Competition, run: str, table: pd.DataFrame) -> Path:
    """The run's folder, if its config and folds are what this call would train with."""
    from kit.config import load_config

    run_dir = competition.run_dir(run)
    before = load_config(run_dir / "config.toml").to_dict()
    changes = config_changes(before, competition.config.to_dict())
    if changes:
        raise KitError(
            f"--resume {run}: the config changed since the run started ({'; '.join(changes)}): "
            "restore kit.toml or pass the same --set values, or train a new run with --name"
        )
    info = json.loads((run_dir / "run.json").read_text())
    current = folds_hash(table)
    if info.get("folds_hash") != current:
        raise KitError(
            f"--resume {run}: folds.csv changed since the run started (folds hash "
            f"{info.get('folds_hash')} -> {current}): restore folds.csv or train a new run"
        )
    return run_dir


def train_run(
    competition: Competition,
    run: str | None = None,
    *,
    folds: list[int] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Train every fold (or the listed ones) into runs/<run>/; return metrics.json's content.

    resume: continue runs/<run>/ — finished folds are skipped, an interrupted fold continues
    from its last.pt. Under torchrun every rank calls this; rank 0 writes the files.
    """
    import torch

    from kit.train import ddp
    from kit.train.loop import train_fold
    from kit.train.recipe import check_recipe

    config = competition.config
    table, task = training_table(competition)
    get_metric(config.metric.name, task.kind)  # a metric that cannot score the task fails now
    check_recipe(config.train)
    pseudo = _pseudo_labels(competition, task)
    all_folds = sorted(table["fold"].unique().tolist())
    chosen = all_folds if folds is None else sorted(set(folds))
    unknown = sorted(set(chosen) - set(all_folds))
    if unknown:
        raise KitError(f"--folds {unknown} not in folds.csv (folds: {all_folds})")
    main = ddp.is_main()
    if resume:
        if not run:
            raise KitError("--resume needs the run's name: kit train --resume RUN")
        run_dir = check_resumable(competition, run, table)
    else:
        run = run or default_run_name(competition)
        run_dir = competition.run_dir(run, must_exist=False)
        if (run_dir / "config.toml").exists():
            raise KitError(
                f"run '{run}' exists in {run_dir}: choose another --name, or --resume {run}"
            )
    device = ddp.setup(config.train.device)
    log_path = run_dir / "log.jsonl"
    if main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.toml", dump_toml(config.to_dict()))
        info = {
            "run": run,
            "model": config.model.name,
            "task": task.kind,
            "classes": list(task.classes),
            "folds_hash": folds_hash(table),
            "device": str(device),
            "world_size": ddp.rank_and_world()[1],
            "torch": torch.__version__,
            "git_commit": git_commit(competition.root),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "stage1": pseudo["stage1"] if pseudo else None,  # the runs its pseudo-labels came from
        }
        write_json(run_dir / "run.json", info)
        append_jsonl(log_path, {"event": "start", **info})
    elif main:
        append_jsonl(log_path, {"event": "resume", "folds": chosen})
    ddp.barrier()

    for fold in chosen:
        fold_dir = run_dir / f"fold{fold}"
        if resume and (fold_dir / "result.json").exists():
            continue  # finished before the interruption
        valid = table["fold"] == fold
        train_items, train_targets = table[~valid].reset_index(drop=True), None
        if pseudo:
            from kit.infer.pseudo import stage2_targets

            weight = config.train.pseudo_weight
            train_items, train_targets = stage2_targets(task, train_items, pseudo, weight)
        result = train_fold(
            config, fold, train_items, table[valid].reset_index(drop=True),
            task, fold_dir, device, root=competition.root, log_path=log_path,
            progress=progress, resume=resume, train_targets=train_targets,
        )  # fmt: skip
        if main:
            frame = pd.DataFrame(result.probs, columns=task.columns)
            frame.insert(0, "fold", fold)
            frame.insert(0, "id", table.loc[valid, "id"].to_numpy())
            write_csv(fold_dir / "oof.csv", frame)
            summary = {"fold": fold, "score": result.score, "epoch": result.epoch,
                       "seconds": round(result.seconds, 3), "epochs_run": len(result.history)}  # fmt: skip
            write_json(fold_dir / "result.json", summary)  # written last: the fold is done
            (fold_dir / "last.pt").unlink(missing_ok=True)  # resume skips the fold; best.pt stays
            append_jsonl(log_path, {"event": "fold", **summary})
        ddp.barrier()

    if main:
        metrics = assemble_run(competition, run_dir, table, task)
        append_jsonl(
            log_path, {"event": "end", "cv": metrics["cv"], "complete": metrics["complete"]}
        )
        finish_run(competition, run_dir)
    ddp.barrier()
    metrics = read_metrics(run_dir)
    ddp.cleanup()
    return {"run": run, "run_dir": str(run_dir), **metrics}


def _pseudo_labels(competition: Competition, task: Task) -> dict | None:
    """train.pseudo's labels for a stage-2 run, or None; refuses what they cannot feed."""
    t = competition.config.train
    if not t.pseudo:
        return None
    if task.kind not in ("multiclass", "binary"):
        raise ConfigError(f"train.pseudo needs a multiclass or binary task, not {task.kind!r}")
    if t.balance != "none" or competition.config.data.bbox_columns:
        raise ConfigError(
            'train.pseudo trains on soft targets and test images: set train.balance = "none" '
            "and data.bbox_columns = [] for a stage-2 run"
        )
    if not 0 <= t.pseudo_weight <= 1:
        raise ConfigError(f"train.pseudo_weight {t.pseudo_weight} must lie in [0, 1]")
    from kit.infer.pseudo import read_pseudo_labels

    return read_pseudo_labels(competition, t.pseudo, task)


def assemble_run(competition: Competition, run_dir: Path, table: pd.DataFrame, task: Task) -> dict:
    """oof.csv and metrics.json from every finished fold; `complete` once all folds exist."""
    all_folds = sorted(table["fold"].unique().tolist())
    done = [k for k in all_folds if (run_dir / f"fold{k}" / "result.json").exists()]
    if not done:
        raise KitError(f"{run_dir} has no finished fold yet: kit train --resume {run_dir.name}")
    results = [json.loads((run_dir / f"fold{k}" / "result.json").read_text()) for k in done]
    frames = [pd.read_csv(run_dir / f"fold{k}" / "oof.csv", dtype={"id": str}) for k in done]
    oof_frame = pd.concat(frames, ignore_index=True)
    order = table.loc[table["fold"].isin(done), "id"]  # folds.csv's row order, as before
    oof_frame = oof_frame.set_index("id").loc[order].reset_index()
    write_csv(run_dir / "oof.csv", oof_frame)
    metrics = score_oof(competition, oof_frame, table, task)
    scores = [r["score"] for r in results]
    metrics.update(
        {
            "folds": scores,
            "fold_ids": done,
            "best_epochs": [r["epoch"] for r in results],
            "cv_std": float(np.std(scores)),
            "seconds": round(sum(r["seconds"] for r in results), 1),
            "complete": len(done) == len(all_folds),
            "missing_folds": sorted(set(all_folds) - set(done)),
        }
    )
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def finish_run(competition: Competition, run_dir: Path) -> None:
    """Record the run in the ledger and write its report (neither may lose the trained run)."""
    import warnings

    from kit.ledger import record_run
    from kit.report import write_run_report

    record_run(competition, run_dir.name)
    try:
        write_run_report(competition, run_dir.name)
    except Exception as error:  # a plotting failure must not fail a run whose files are written
        warnings.warn(f"{run_dir / 'report.html'} not written: {error}", stacklevel=2)


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
