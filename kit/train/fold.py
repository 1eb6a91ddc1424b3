"""One fold of a run: the body every scheduler runs, in this process (kit/train/cv.py), in a
kit.cluster child process or in a Ray task, so each writes the same files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from kit.competition import Competition
from kit.errors import ConfigError
from kit.fileio import append_jsonl, write_csv, write_json
from kit.infer.pseudo import read_pseudo_labels, stage2_targets
from kit.run import Fold
from kit.task import Task
from kit.train import ddp
from kit.train.loop import train_fold


@dataclass(frozen=True)
class FoldJob:
    """What every fold of one run trains with: the run, its data and where it trains."""

    competition: Competition
    run_dir: Path
    table: pd.DataFrame  # folds.csv joined with the labels (kit.data.folds.training_table)
    task: Task
    device: torch.device
    log_path: Path  # runs/<run>/log.jsonl
    pseudo: dict | None  # stage-2 pseudo-labels (pseudo_labels), or None
    progress: bool
    resume: bool  # continue a fold from its last.pt


def train_one_fold(job: FoldJob, fold: int, *, run_progress=None, tracker=None) -> dict | None:
    """Train one fold into run_dir/fold<k>/ (oof.csv, result.json); rank 0 returns its summary.

    The one body a fold runs through, here or in a kit.cluster child process or Ray task.
    """
    competition, run_dir, table, task = job.competition, job.run_dir, job.table, job.task
    config = competition.config
    fold_files = Fold(run_dir, fold)
    fold_dir = fold_files.dir
    valid = table["fold"] == fold
    train_items, train_targets = table[~valid].reset_index(drop=True), None
    if job.pseudo:
        weight = config.train.pseudo_weight
        train_items, train_targets = stage2_targets(task, train_items, job.pseudo, weight)
    result = train_fold(
        config,
        fold,
        train_items,
        table[valid].reset_index(drop=True),
        task,
        fold_dir,
        job.device,
        root=competition.root,
        log_path=job.log_path,
        progress=job.progress,
        resume=job.resume,
        train_targets=train_targets,
        run_progress=run_progress,
        on_epoch=tracker.epoch if tracker else None,
    )
    if not ddp.is_main():
        return None
    frame = pd.DataFrame(result.probs, columns=task.columns)
    frame.insert(0, "fold", fold)
    frame.insert(0, "id", table.loc[valid, "id"].to_numpy())
    write_csv(fold_files.oof_path, frame)
    # threads: CPU float sums depend on them, so a run is reproducible only at the same count
    summary = {
        "fold": fold,
        "score": result.score,
        "epoch": result.epoch,
        "seconds": round(result.seconds, 3),
        "epochs_run": len(result.history),
        "threads": torch.get_num_threads(),
    }
    write_json(fold_files.result_path, summary)  # written last: the fold is done
    fold_files.last.unlink(missing_ok=True)  # resume skips the fold; best.pt stays
    append_jsonl(job.log_path, {"event": "fold", **summary})
    return summary


def pseudo_labels(competition: Competition, task: Task) -> dict | None:
    """train.pseudo's labels for a stage-2 run, or None; refuses what they cannot feed."""
    t = competition.config.train
    if not t.pseudo:
        return None
    if not task.single_label:
        raise ConfigError(f"train.pseudo needs a multiclass or binary task, not {task.kind!r}")
    if t.balance != "none" or competition.config.data.bbox_columns:
        raise ConfigError(
            'train.pseudo trains on soft targets and test images: set train.balance = "none" '
            "and data.bbox_columns = [] for a stage-2 run"
        )
    if not 0 <= t.pseudo_weight <= 1:
        raise ConfigError(f"train.pseudo_weight {t.pseudo_weight} must lie in [0, 1]")

    return read_pseudo_labels(competition, t.pseudo, task)
