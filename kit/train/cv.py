"""The k-fold driver: one run = one config trained on every fold, with OOF predictions and CV."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit.cluster import create_runner
from kit.competition import Competition
from kit.config import dump_toml
from kit.data.bench import resolve_workers
from kit.data.cache import create_image_source
from kit.data.folds import bad_training_images, folds_hash, training_table
from kit.device import intra_op_threads
from kit.errors import ConfigError, Interrupted, KitError
from kit.fileio import append_jsonl, write_csv, write_text
from kit.ledger import record_run
from kit.metrics import get_metric
from kit.progress import RunProgress, echo
from kit.report import write_run_report
from kit.results import TrainResult
from kit.run import Fold, Run
from kit.task import Task
from kit.train import ddp
from kit.train.fold import FoldJob, pseudo_labels, train_one_fold
from kit.train.model import create_model
from kit.train.recipe import check_components
from kit.workbench.track import open_tracker


def default_run_name(competition: Competition) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{competition.config.model.name}-{stamp}"


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# what may differ when a run is resumed: how it is predicted, submitted or loaded, not trained
RESUME_IGNORES = {
    "competition",
    "predict",
    "submission",
    "kernel",
    ("train", "num_workers"),
    ("train", "threads"),  # how fast this machine runs it, like num_workers
    "sweep",  # the search space of `kit sweep`, not a training setting
    "track",  # where metrics are logged
}


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
    opened = competition.run(run)
    before = opened.config.to_dict()
    changes = config_changes(before, competition.config.to_dict())
    if changes:
        raise KitError(
            f"--resume {run}: the config changed since the run started ({'; '.join(changes)}): "
            "restore kit.toml or pass the same --set values, or train a new run with --name"
        )
    info = opened.info
    current = folds_hash(table)
    if info.get("folds_hash") != current:
        raise KitError(
            f"--resume {run}: folds.csv changed since the run started (folds hash "
            f"{info.get('folds_hash')} -> {current}): restore folds.csv or train a new run"
        )
    return opened.dir


def train_run(
    competition: Competition,
    run: str | None = None,
    *,
    folds: list[int] | None = None,
    progress: bool = True,
    resume: bool = False,
    nproc: int = 1,
    parallel: str | None = None,
    cluster: str | None = None,
    echo=None,
    on_fold=None,
    runner=None,
) -> TrainResult:
    """Train every fold (or the listed ones) into runs/<run>/; return metrics.json's content.

    resume: continue runs/<run>/ — finished folds are skipped, an interrupted fold continues
    from its last.pt. nproc: DDP ranks through torchrun (kit/train/ddp.py), every rank trains
    each fold and rank 0 writes the files. parallel ("auto" or N) / cluster (a Ray address):
    folds side by side (kit/cluster.py); runner: such a scheduler built by the caller.
    on_fold(summary): called on rank 0 after each fold finishes (`kit sweep` prunes there).
    echo(line): what the user must know (images skipped), and with progress the schedulers'
    progress lines; None prints nothing.
    """
    if resume and not run:
        raise KitError("--resume needs the run's name: kit train --resume RUN")
    if competition.config.data.skip_bad and echo is not None and not ddp.inside_rank():
        bad = bad_training_images(competition)
        shown = f": {', '.join(bad)}" if 0 < len(bad) <= 3 else ""
        echo(f"skipping {len(bad)} undecodable image(s){shown}")
    if nproc > 1 and not ddp.inside_rank():
        if parallel or cluster:
            raise KitError(
                "--nproc splits one fold over DDP ranks; --parallel/--cluster train folds "
                "side by side: choose one"
            )
        name = run or default_run_name(competition)
        return ddp.launch_run(
            competition, name, nproc=nproc, folds=folds, resume=resume, progress=progress
        )
    scheduler = contextlib.nullcontext(runner)  # a runner the caller built, or none
    if runner is None and (parallel or cluster):
        shown = echo if progress else None
        scheduler = create_runner(competition, parallel=parallel, cluster=cluster, echo=shown)
    with scheduler as chosen:
        return _train_run(
            competition,
            run,
            folds=folds,
            progress=progress,
            resume=resume,
            on_fold=on_fold,
            runner=chosen,
        )


def _train_run(competition, run, *, folds, progress, resume, on_fold, runner) -> TrainResult:
    """train_run in this process (one torchrun rank, or the only process)."""
    config = competition.config
    table, task = training_table(competition)
    get_metric(config.metric.name, task.kind)  # a metric that cannot score the task fails now
    check_components(config)  # model name and pipelines, before anything is written
    pseudo = pseudo_labels(competition, task)
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
        if Run(competition, run).exists and not Run(competition, run).is_dead:
            raise KitError(
                f"run '{run}' exists in {run_dir}: choose another --name, or --resume {run}"
            )
    # everything a late error could come from is built and checked before runs/<run>/ exists,
    # so a mistake in kit.toml never leaves a dead run folder that blocks the name
    preflight(competition, table, task)
    # a runner's folds pick their device where they run (the driver may have no GPU)
    device = runner.device if runner is not None else ddp.setup(config.train.device)
    log_path = Run(competition, run).log_path
    lock = None
    if main:
        lock = Run(competition, run).claim(new=not resume)
    if main and not resume:
        write_text(Run(competition, run).config_path, dump_toml(config.to_dict()))
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
        Run(competition, run).write_info(info)
        append_jsonl(log_path, {"event": "start", **info})
    elif main:
        append_jsonl(log_path, {"event": "resume", "folds": chosen})
    ddp.barrier()
    tracker = None
    if main:  # TensorBoard event files always, MLflow when [track] mlflow is set
        tracker = open_tracker(competition, run_dir, new=not resume)
    job = FoldJob(competition, run_dir, table, task, device, log_path, pseudo, progress, resume)
    try:
        _train_folds(job, run, chosen, tracker=tracker, on_fold=on_fold, runner=runner)
    except KeyboardInterrupt:
        raise Interrupted(
            f"training of run '{run}' interrupted: continue it with "
            f"`kit train -C {competition.root} --resume {run}`"
        ) from None
    finally:
        if tracker is not None:
            tracker.close(finished=False)  # no-op when training ended and closed it
        if lock is not None:
            lock.close()  # releases the flock
    metrics = Run(competition, run).metrics
    ddp.cleanup()
    return TrainResult.from_metrics(run, run_dir, metrics)


def _say_machine_fit(competition, device) -> None:
    """One line on how the run uses this machine: loader workers and torch threads per rank."""
    t, world = competition.config.train, ddp.rank_and_world()[1]
    workers, why = resolve_workers(competition.config, competition.root, device, world)
    threads = intra_op_threads(workers, world, t.threads, load_aware=not t.deterministic)
    echo(
        f"{device}: {world} rank(s), {workers} loader worker(s) each ({why}), "
        f"{threads} torch thread(s) each"
    )


def _train_folds(job: FoldJob, run: str, chosen, *, tracker, on_fold, runner) -> None:
    """Train the chosen folds of run_dir, then assemble its OOF, metrics, ledger row and report."""
    competition, run_dir, progress = job.competition, job.run_dir, job.progress
    config = competition.config
    main = ddp.is_main()
    todo = [k for k in chosen if not (job.resume and Fold(run_dir, k).finished)]
    if runner is not None:  # kit.cluster: each fold is train_one_fold in a child or a Ray task
        on_epoch = tracker.epoch if tracker is not None else None  # read from log.jsonl
        for summary in runner(competition, run_dir, todo, on_epoch=on_epoch):  # as folds finish
            if tracker is not None:
                tracker.fold(summary)
            if on_fold is not None:
                on_fold(summary)
        todo = []
    run_progress = RunProgress(run, todo, config.train.epochs, enabled=progress and main)
    if progress and main and todo:
        _say_machine_fit(competition, job.device)
    for fold in todo:
        summary = train_one_fold(job, fold, run_progress=run_progress, tracker=tracker)
        if main:
            if tracker is not None:
                tracker.fold(summary)
            if on_fold is not None:
                on_fold(summary)
        ddp.barrier()

    if main:
        metrics = assemble_run(competition, run_dir, job.table, job.task)
        append_jsonl(
            job.log_path, {"event": "end", "cv": metrics["cv"], "complete": metrics["complete"]}
        )
        finish_run(competition, run_dir)
        if tracker is not None:
            cv = {f"cv/{metrics['metric']}": metrics["cv"], "cv/std": metrics["cv_std"]}
            tracker.scalars(cv)
            tracker.close(finished=metrics["complete"])
    ddp.barrier()


def preflight(competition: Competition, table: pd.DataFrame, task: Task) -> None:
    """Build what training builds beyond check_components (image source, the model with its
    pretrained file, the optimiser) once, so that a late error fails before the run exists."""
    config = competition.config
    t = config.train
    create_image_source(config, competition.root, table, cache=False)
    model = create_model(config.model, task.num_outputs, root=competition.root)
    try:
        torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"train.lr / train.weight_decay: {error}") from None


def assemble_run(competition: Competition, run_dir: Path, table: pd.DataFrame, task: Task) -> dict:
    """oof.csv and metrics.json from every finished fold; `complete` once all folds exist."""
    all_folds = sorted(table["fold"].unique().tolist())
    run = Run(competition, run_dir.name)
    done = run.finished_folds(all_folds)
    if not done:
        raise KitError(f"{run_dir} has no finished fold yet: kit train --resume {run_dir.name}")
    results = [run.fold(k).result() for k in done]
    frames = [pd.read_csv(run.fold(k).oof_path, dtype={"id": str}) for k in done]
    oof_frame = pd.concat(frames, ignore_index=True)
    order = table.loc[table["fold"].isin(done), "id"]  # folds.csv's row order, as before
    oof_frame = oof_frame.set_index("id").loc[order].reset_index()
    write_csv(run.oof_path, oof_frame)
    metrics = score_oof(competition, oof_frame, table, task)
    scores = [r["score"] for r in results]
    metrics.update(
        {
            "folds": scores,
            "fold_ids": done,
            "best_epochs": [r["epoch"] for r in results],
            "cv_std": float(np.std(scores)),
            "threads": [r.get("threads") for r in results],  # torch threads per fold
            "seconds": round(sum(r["seconds"] for r in results), 1),
            "complete": len(done) == len(all_folds),
            "missing_folds": sorted(set(all_folds) - set(done)),
        }
    )
    run.write_metrics(metrics)
    return metrics


def finish_run(competition: Competition, run_dir: Path) -> None:
    """Record the run in the ledger and write its report (neither may lose the trained run)."""
    record_run(competition, run_dir.name)
    try:
        write_run_report(competition, run_dir.name)
    except Exception as error:  # a plotting failure must not fail a run whose files are written
        report = Run(competition, run_dir.name).report_path
        warnings.warn(f"{report} not written: {error}", stacklevel=2)


def score_oof(
    competition: Competition, predictions: pd.DataFrame, table: pd.DataFrame, task: Task
) -> dict:
    """The competition metric over all OOF rows at once, plus per-class recall."""
    metric = get_metric(competition.config.metric.name, task.kind)
    targets = task.encode(table.set_index("id").loc[predictions["id"], "target"])
    values = predictions[task.columns].to_numpy()
    per_class = task.per_class_recall(targets, task.decide(values))
    return {
        "metric": metric.name,
        "cv": metric.score(task, targets, values),
        "per_class": per_class,
    }
