"""Prediction of a run: every fold's best weights, every TTA view, on OOF and test images.

Each image is decoded once: an OOF image by its own fold's model, a test image once for all folds
(every fold's model scores the same decoded batch). Views are made from the decoded batch on the
device and run as one batch; views merge as probabilities (mean or geometric mean), never as raw
logits. The OOF score of every view is reported, and `auto` keeps only the views that raise it.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kit.choices import FoldMerge, ViewMerge
from kit.competition import Competition
from kit.config import check_choice
from kit.data.bench import resolve_workers
from kit.data.cache import create_image_source
from kit.data.dataset import ImageDataset
from kit.data.folds import training_table
from kit.data.layout import read_test_items
from kit.data.transforms import create_transform
from kit.device import (
    DevicePrefetcher,
    PassBudget,
    autocast,
    intra_op_threads,
    normalise,
    pick_device,
    run_in_passes,
    set_threads,
    to_unit_float,
    worker_init,
)
from kit.errors import KitError
from kit.fileio import write_csv
from kit.infer.merge import merge as merge_tables
from kit.infer.tta import expand_views, parse_view
from kit.infer.views import check_view_names
from kit.metrics import best_improvement, get_metric
from kit.report import write_run_report
from kit.results import PredictResult
from kit.run import Fold
from kit.train.checkpoint import load_weights
from kit.train.cv import score_oof
from kit.train.model import create_model, input_stats
from kit.workbench.track import track_scores


def _forward(model, x, views, mean, std, device, amp, task, budget=None):
    """(B,C,H,W) unit floats on the device -> (n_views, B, task.num_outputs) activated outputs.

    The views are made from the one decoded batch. The V x B view-images go through the model in
    passes sized by budget (kit.device.PassBudget: cache-sized on a CPU, memory-sized on an
    accelerator, halved on out-of-memory); a pass may hold several views, or part of one.
    """
    budget = budget or PassBudget(device)
    x = normalise(x, mean, std)  # views move pixels only, so normalising first is the same
    n = len(x)

    def forward(start: int, stop: int):
        # view-major: item i is view i // n of image i % n
        parts = [
            views[v](x[max(start, v * n) - v * n : min(stop, (v + 1) * n) - v * n])
            for v in range(start // n, (stop - 1) // n + 1)
        ]
        with autocast(device, amp):
            logits = model(parts[0] if len(parts) == 1 else torch.cat(parts))
        return task.activate(logits)

    outputs = run_in_passes(forward, len(views) * n, budget)
    return torch.cat(outputs).view(len(views), n, -1).cpu().numpy()


def inference_model(model, device, channels_last: bool):
    """model on device for inference: eval mode, and NHWC (channels_last) when
    train.channels_last, on CUDA as in training and on a CPU too, whose convolutions run faster
    in it at inference (one thread, 128 px: mobilenetv3_small 1.5x, resnet18 1.26x; see
    docs/results.md). Outputs differ from NCHW by float rounding only."""

    model = model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def select_views(names: list[str], oof_views: np.ndarray, score, better, how: str, task):
    """Greedy forward selection on OOF: start from identity (else the best view), then add the
    view that raises the merged OOF score most, while one does. Returns the chosen indices."""
    singles = [score(oof_views[i]) for i in range(len(names))]
    if "identity" in names:
        chosen = [names.index("identity")]
    else:
        best_single = 0
        for i, s in enumerate(singles):
            if better(s, singles[best_single]):
                best_single = i
        chosen = [best_single]
    best = singles[chosen[0]]
    while len(chosen) < len(names):
        trials = {
            i: score(merge_tables(oof_views[chosen + [i]], how, task))
            for i in range(len(names))
            if i not in chosen
        }
        pick = best_improvement(trials, best, better)
        if pick is None:
            break
        chosen.append(pick)
        best = trials[pick]
    return sorted(chosen)


def parse_tta_option(text: str | None) -> tuple[list[str] | None, bool]:
    """--tta 'identity,hflip' -> views; 'auto' -> choose among predict.tta; 'auto,v1,v2' -> among v1,v2."""
    if not text:
        return None, False
    views: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if views and re.fullmatch(r"-?[\d.]+", part):  # the rest of shift:1,0 or crop:c,0.9
            views[-1] += f",{part}"
        elif part:
            views.append(part)
    if views and views[0] == "auto":
        return views[1:] or None, True
    return views, False


def finished_checkpoints(run_dir, table: pd.DataFrame, *, finished_only: bool = False) -> list:
    """best.pt of every finished fold (result.json written); refuses a run with unfinished folds
    (their best.pt is a half-trained model) unless finished_only."""
    folds = sorted(table["fold"].unique().tolist())
    finished = [k for k in folds if Fold(run_dir, k).finished]
    unfinished = [k for k in folds if k not in finished]
    run = run_dir.name
    if not finished:
        raise KitError(
            f"run '{run}' has no finished fold in {run_dir}: finish it with "
            f"`kit train --resume {run}`"
        )
    if unfinished and not finished_only:
        raise KitError(
            f"run '{run}' has unfinished fold(s) {unfinished} (finished: {finished}): finish it "
            f"with `kit train --resume {run}`, or pass --finished-folds to use only those"
        )
    return [Fold(run_dir, k).best for k in finished]


def predict_run(
    competition: Competition,
    run: str,
    *,
    tta: list[str] | None = None,
    auto: bool | None = None,
    merge: str | None = None,
    fold_merge: str | None = None,
    progress: bool = True,
    finished_only: bool = False,
) -> PredictResult:
    """Write runs/<run>/test.csv, test_folds.csv and oof_tta.csv; return per-view and TTA OOF scores.

    The model, image size and transforms come from the run's config.toml (predict as the run was
    trained); the [predict] settings come from the competition's kit.toml (and --set). A run with
    unfinished folds is refused unless finished_only, which predicts with its finished folds."""
    settings = competition.config.predict
    auto = settings.auto if auto is None else auto
    merge = merge or settings.merge
    fold_merge = fold_merge or settings.fold_merge
    check_choice("predict.merge", merge, ViewMerge)  # this call's values; kit.toml's are checked
    check_choice("predict.fold_merge", fold_merge, FoldMerge)
    check_view_names(tta or settings.tta, settings.forbid_views)
    names = expand_views(tta or settings.tta)
    views = [parse_view(v) for v in names]

    opened = competition.run(run)
    run_dir = opened.dir
    config = opened.config
    table, task = training_table(competition)
    checkpoints = finished_checkpoints(run_dir, table, finished_only=finished_only)
    device = pick_device(config.train.device)
    amp = config.train.amp
    metric = get_metric(competition.config.metric.name, task.kind)
    test_items = read_test_items(competition)
    transform = create_transform(config.augment.valid, config.train.image_size, "augment.valid")
    # as training decoded them (reduced JPEG decode where the valid pipeline resizes first)
    source = create_image_source(config, competition.root, table, augment=config.augment.valid)
    workers, _ = resolve_workers(config, competition.root, device)
    set_threads(intra_op_threads(workers, 1, config.train.threads))
    loader_args = {
        "batch_size": settings.batch_size,
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": worker_init if workers > 0 else None,
    }
    budget = PassBudget(device)  # images per forward pass: sized to the device, halved on OOM

    models = []
    for checkpoint_path in checkpoints:
        state = load_weights(checkpoint_path, ("model", "task", "fold"))  # never unpickles
        if state["task"] != {"kind": task.kind, "classes": list(task.classes)}:
            raise KitError(f"{checkpoint_path} was trained on another task or classes: retrain")
        model = create_model(config.model, task.num_outputs, root=competition.root)
        model.load_state_dict(state["model"])
        models.append((state["fold"], inference_model(model, device, config.train.channels_last)))

    # OOF: every view of each held-out image, from the one model that did not train on it
    oof_views = np.full((len(views), len(table), task.num_outputs), np.nan, dtype=np.float32)
    with torch.no_grad():
        for fold, model in models:
            rows = np.flatnonzero((table["fold"] == fold).to_numpy())
            loader = DataLoader(
                ImageDataset(table["path"].iloc[rows], None, transform, source), **loader_args
            )
            mean, std = input_stats(model)
            start = 0
            for images, _ in DevicePrefetcher(loader, device):
                x = to_unit_float(images, device)
                out = _forward(model, x, views, mean, std, device, amp, task, budget)
                oof_views[:, rows[start : start + len(images)]] = out
                start += len(images)
            if progress:
                print(f"fold {fold}: OOF predicted with {len(views)} view(s)")

    scored = ~np.isnan(oof_views[0, :, 0])
    keys = table.loc[scored, ["id", "fold"]].reset_index(drop=True)
    targets = task.encode(table.loc[scored, "target"])

    def score(values: np.ndarray) -> float:
        return metric.score(task, targets, values[scored])

    view_scores = {name: score(oof_views[i]) for i, name in enumerate(names)}
    if auto:
        chosen = select_views(names, oof_views, score, metric.better, merge, task)
    else:
        chosen = list(range(len(names)))
    chosen_names = [names[i] for i in chosen]
    chosen_views = [views[i] for i in chosen]

    # test: each batch decoded once, every fold's model scores its views
    space = "mean" if fold_merge == "prob" else "logit"
    test_folds = np.empty((len(models), len(test_items), task.num_outputs), dtype=np.float32)
    test_loader = DataLoader(
        ImageDataset(test_items["path"], None, transform, source), **loader_args
    )
    start = 0
    with torch.no_grad():
        for images, _ in DevicePrefetcher(test_loader, device):
            x = to_unit_float(images, device)
            for k, (_, model) in enumerate(models):
                mean, std = input_stats(model)
                out = _forward(model, x, chosen_views, mean, std, device, amp, task, budget)
                test_folds[k, start : start + len(images)] = merge_tables(out, merge, task)
            start += len(images)
    if progress:
        print(f"test: {len(test_items)} images x {len(models)} fold(s) x {len(chosen)} view(s)")

    test = pd.DataFrame(merge_tables(test_folds, space, task), columns=task.columns)
    test.insert(0, "id", test_items["id"].to_numpy())
    write_csv(opened.test_path, test)
    by_fold = pd.DataFrame(test_folds.reshape(-1, task.num_outputs), columns=task.columns)
    by_fold.insert(0, "fold", np.repeat([fold for fold, _ in models], len(test_items)))
    by_fold.insert(0, "id", np.tile(test_items["id"].to_numpy(), len(models)))
    write_csv(opened.test_folds_path, by_fold)  # each fold alone: for diagnostics, benchmarks

    oof_merged = merge_tables(oof_views[chosen], merge, task)[scored]
    oof_tta = pd.concat([keys, pd.DataFrame(oof_merged, columns=task.columns)], axis=1)
    write_csv(opened.oof_tta_path, oof_tta)
    metrics = opened.update_metrics(
        tta=chosen_names,
        tta_candidates=names,
        tta_auto=bool(auto),
        merge=merge,
        fold_merge=fold_merge,
        cv_tta=score_oof(competition, oof_tta, table, task)["cv"],
        cv_by_view=view_scores,
    )
    _refresh_report(competition, run)  # report.html gains the TTA section

    track_scores(competition, run, {"cv/tta": metrics["cv_tta"]})  # TensorBoard, MLflow
    return PredictResult.from_metrics(run, opened.test_path, metrics)


def _refresh_report(competition: Competition, run: str) -> None:
    try:
        write_run_report(competition, run)
    except Exception as error:  # a plotting failure must not fail a finished prediction
        warnings.warn(f"report.html of run {run} not rewritten: {error}", stacklevel=2)
