"""Prediction of a run: every fold's best weights, every TTA view, on OOF and test images.

Each image is decoded once: an OOF image by its own fold's model, a test image once for all folds
(every fold's model scores the same decoded batch). Views are made from the decoded batch on the
device and run as one batch; views merge as probabilities (mean or geometric mean), never as raw
logits. The OOF score of every view is reported, and `auto` keeps only the views that raise it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.config import load_config
from kit.errors import ConfigError, KitError
from kit.fileio import write_csv, write_json
from kit.infer.merge import merge as merge_tables
from kit.metrics import best_improvement

# Images per forward pass on a CPU: past about this, activations fall out of cache and one big
# batch of every view runs slower than several smaller ones (measured: benchmarks/tta.py).
CPU_FORWARD_IMAGES = 64


def _forward(model, x, views, mean, std, device, amp, task):
    """(B,C,H,W) unit floats on the device -> (n_views, B, task.num_outputs) activated outputs.

    The views are made from the one decoded batch; on an accelerator they all go through the
    model as one batch, on a CPU in groups of about CPU_FORWARD_IMAGES images.
    """
    import torch

    from kit.device import autocast, normalise
    from kit.infer.tta import make_views

    x = normalise(x, mean, std)  # views move pixels only, so normalising first is the same
    per_pass = len(views) if device.type != "cpu" else max(1, CPU_FORWARD_IMAGES // len(x))
    outputs = []
    for start in range(0, len(views), per_pass):
        with autocast(device, amp):
            logits = model(make_views(x, views[start : start + per_pass]))
        outputs.append(task.activate(logits))
    return torch.cat(outputs).view(len(views), len(x), -1).cpu().numpy()


def select_views(names: list[str], oof_views: np.ndarray, score, better, how: str, kind: str):
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
            i: score(merge_tables(oof_views[chosen + [i]], how, kind))
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


def predict_run(
    competition: Competition,
    run: str,
    *,
    tta: list[str] | None = None,
    auto: bool | None = None,
    merge: str | None = None,
    fold_merge: str | None = None,
    progress: bool = True,
) -> dict:
    """Write runs/<run>/test.csv, test_folds.csv and oof_tta.csv; return per-view and TTA OOF scores.

    The model, image size and transforms come from the run's config.toml (predict as the run was
    trained); the [predict] settings come from the competition's kit.toml (and --set)."""
    import torch
    from torch.utils.data import DataLoader

    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.folds import training_table
    from kit.data.layout import read_test_items
    from kit.data.transforms import create_transform
    from kit.device import pick_device, to_unit_float
    from kit.infer.tta import check_views, expand_views, parse_view
    from kit.metrics import get_metric
    from kit.train.cv import read_metrics, score_oof
    from kit.train.model import create_model, input_stats

    settings = competition.config.predict
    auto = settings.auto if auto is None else auto
    merge = merge or settings.merge
    fold_merge = fold_merge or settings.fold_merge
    if merge not in ("mean", "gmean"):
        raise ConfigError(f"predict.merge {merge!r} is unknown: use mean or gmean")
    if fold_merge not in ("prob", "logit"):
        raise ConfigError(f"predict.fold_merge {fold_merge!r} is unknown: use prob or logit")
    names = expand_views(tta or settings.tta)
    if not names:
        raise ConfigError("predict.tta is empty: name at least one view, e.g. identity")
    check_views(names, settings.forbid_views)
    views = [parse_view(v) for v in names]

    run_dir = competition.run_dir(run)
    config = load_config(run_dir / "config.toml")
    checkpoints = sorted(run_dir.glob("fold*/best.pt"))
    if not checkpoints:
        raise KitError(f"run '{run}' has no fold checkpoints in {run_dir}: train it first")
    device = pick_device(config.train.device)
    amp = config.train.amp
    table, task = training_table(competition)
    metric = get_metric(competition.config.metric.name, task.kind)
    test_items = read_test_items(competition)
    transform = create_transform(config.augment.valid, config.train.image_size, "augment.valid")
    source = create_image_source(config, competition.root, table)  # as training decoded them
    loader_args = {"batch_size": settings.batch_size, "num_workers": config.train.num_workers}

    models = []
    for checkpoint_path in checkpoints:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state["task"] != {"kind": task.kind, "classes": list(task.classes)}:
            raise KitError(f"{checkpoint_path} was trained on another task or classes: retrain")
        model = create_model(config.model, task.num_outputs, root=competition.root)
        model.load_state_dict(state["model"])
        models.append((state["fold"], model.to(device).eval()))

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
            for images, _ in loader:
                x = to_unit_float(images, device)
                out = _forward(model, x, views, mean, std, device, amp, task)
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
        chosen = select_views(names, oof_views, score, metric.better, merge, task.kind)
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
        for images, _ in test_loader:
            x = to_unit_float(images, device)
            for k, (_, model) in enumerate(models):
                mean, std = input_stats(model)
                out = _forward(model, x, chosen_views, mean, std, device, amp, task)
                test_folds[k, start : start + len(images)] = merge_tables(out, merge, task.kind)
            start += len(images)
    if progress:
        print(f"test: {len(test_items)} images x {len(models)} fold(s) x {len(chosen)} view(s)")

    test = pd.DataFrame(merge_tables(test_folds, space, task.kind), columns=task.columns)
    test.insert(0, "id", test_items["id"].to_numpy())
    write_csv(run_dir / "test.csv", test)
    by_fold = pd.DataFrame(test_folds.reshape(-1, task.num_outputs), columns=task.columns)
    by_fold.insert(0, "fold", np.repeat([fold for fold, _ in models], len(test_items)))
    by_fold.insert(0, "id", np.tile(test_items["id"].to_numpy(), len(models)))
    write_csv(run_dir / "test_folds.csv", by_fold)  # each fold alone: for diagnostics, benchmarks

    oof_merged = merge_tables(oof_views[chosen], merge, task.kind)[scored]
    oof_tta = pd.concat([keys, pd.DataFrame(oof_merged, columns=task.columns)], axis=1)
    write_csv(run_dir / "oof_tta.csv", oof_tta)
    metrics = read_metrics(run_dir)
    metrics.update(
        {
            "tta": chosen_names,
            "tta_candidates": names,
            "tta_auto": bool(auto),
            "merge": merge,
            "fold_merge": fold_merge,
            "cv_tta": score_oof(competition, oof_tta, table, task)["cv"],
            "cv_by_view": view_scores,
        }
    )
    write_json(run_dir / "metrics.json", metrics)
    return {"run": run, "test_csv": str(run_dir / "test.csv"), **metrics}
