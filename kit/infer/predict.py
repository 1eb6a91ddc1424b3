"""Prediction of a run: every fold's best weights, every TTA view, on test and OOF images.

Each image is decoded once per fold; its views are made from the decoded batch on the device and
run as one batch; views merge as probabilities (never logits), then folds are averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.config import load_config
from kit.data.layout import read_test_items
from kit.errors import KitError
from kit.fileio import write_csv, write_json


@np.errstate(all="ignore")
def _predict_views(model, loader, device, views, mean, std, amp, task) -> np.ndarray:
    """(n_views, n_images, task.num_outputs) activated outputs."""
    import torch

    from kit.device import autocast, normalise, to_unit_float
    from kit.infer.tta import make_views

    model.eval()
    chunks = []
    with torch.no_grad():
        for images, _ in loader:
            x = to_unit_float(images, device)
            batch = normalise(make_views(x, views), mean, std)
            with autocast(device, amp):
                logits = model(batch)
            probs = task.activate(logits).view(len(views), len(images), -1)
            chunks.append(probs.cpu())
    return torch.cat(chunks, dim=1).numpy()


def predict_run(
    competition: Competition, run: str, *, tta: list[str] | None = None, progress: bool = True
) -> dict:
    """Write runs/<run>/test.csv (and oof_tta.csv); return per-view and TTA OOF scores."""
    import torch
    from torch.utils.data import DataLoader

    from kit.data.dataset import ImageDataset
    from kit.data.folds import training_table
    from kit.data.transforms import create_transform
    from kit.device import pick_device
    from kit.infer.tta import parse_view
    from kit.train.cv import read_metrics, score_oof
    from kit.train.model import create_model, input_stats

    run_dir = competition.run_dir(run)
    config = load_config(run_dir / "config.toml")  # predict as the run was trained
    view_names = tta or config.predict.tta
    views = [parse_view(v) for v in view_names]
    checkpoints = sorted(run_dir.glob("fold*/best.pt"))
    if not checkpoints:
        raise KitError(f"run '{run}' has no fold checkpoints in {run_dir}: train it first")
    device = pick_device(config.train.device)
    table, task = training_table(competition)
    test_items = read_test_items(competition)
    transform = create_transform(config.augment.valid, config.train.image_size, "augment.valid")
    loader_args = {"batch_size": config.predict.batch_size, "num_workers": config.train.num_workers}
    test_loader = DataLoader(ImageDataset(test_items["path"], None, transform), **loader_args)
    columns = task.columns

    test_sum = np.zeros((len(test_items), task.num_outputs))
    oof_views = np.full((len(views), len(table), task.num_outputs), np.nan)
    for checkpoint_path in checkpoints:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state["task"] != {"kind": task.kind, "classes": list(task.classes)}:
            raise KitError(f"{checkpoint_path} was trained on another task or classes: retrain")
        model = create_model(config.model, task.num_outputs, root=competition.root)
        model.load_state_dict(state["model"])
        model.to(device)
        mean, std = input_stats(model)
        amp = config.train.amp
        per_view = _predict_views(model, test_loader, device, views, mean, std, amp, task)
        test_sum += per_view.mean(axis=0)
        valid = (table["fold"] == state["fold"]).to_numpy()
        valid_set = ImageDataset(table.loc[valid, "path"], None, transform)
        oof_views[:, valid] = _predict_views(
            model, DataLoader(valid_set, **loader_args), device, views, mean, std, amp, task
        )
        if progress:
            print(f"predicted fold {state['fold']} with {len(views)} view(s)")

    test = pd.DataFrame(test_sum / len(checkpoints), columns=columns)
    test.insert(0, "id", test_items["id"].to_numpy())
    write_csv(run_dir / "test.csv", test)

    scored = ~np.isnan(oof_views[0, :, 0])
    keys = table.loc[scored, ["id", "fold"]].reset_index(drop=True)

    def frame(probs: np.ndarray) -> pd.DataFrame:
        return pd.concat([keys, pd.DataFrame(probs[scored], columns=columns)], axis=1)

    oof_tta = frame(oof_views.mean(axis=0))
    write_csv(run_dir / "oof_tta.csv", oof_tta)
    view_scores = {
        name: score_oof(competition, frame(oof_views[i]), table, task)["cv"]
        for i, name in enumerate(view_names)
    }
    metrics = read_metrics(run_dir)
    metrics.update(
        {
            "tta": view_names,
            "cv_tta": score_oof(competition, oof_tta, table, task)["cv"],
            "cv_by_view": view_scores,
        }
    )
    write_json(run_dir / "metrics.json", metrics)
    return {"run": run, "test_csv": str(run_dir / "test.csv"), **metrics}
