"""Training one fold, top to bottom: data, model, optimiser, schedule, epochs, best checkpoint."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kit.config import Config
from kit.data.dataset import ImageDataset
from kit.data.transforms import create_transform
from kit.device import autocast, needs_grad_scaler, normalise, seed_everything, to_unit_float
from kit.errors import ConfigError
from kit.fileio import append_jsonl, atomic_open
from kit.metrics import get_metric
from kit.task import Task
from kit.train.model import create_model, input_stats


@dataclass
class FoldResult:
    fold: int
    score: float  # the competition metric of the best epoch, over the whole validation fold
    epoch: int  # best epoch, counted from 1
    probs: np.ndarray  # (n_valid, task.num_outputs) predictions of the best epoch, valid order
    seconds: float


def save_checkpoint(path: Path, state: dict) -> None:
    """Temp file then rename: a crash while saving keeps the previous checkpoint intact."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def cosine_with_warmup(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict_probs(model, loader, device, mean, std, amp: bool, task: Task) -> np.ndarray:
    model.eval()
    outputs = []
    for images, _ in loader:
        x = normalise(to_unit_float(images, device), mean, std)
        with autocast(device, amp):
            logits = model(x)
        outputs.append(task.activate(logits).cpu())
    return torch.cat(outputs).numpy()


def train_fold(
    config: Config,
    fold: int,
    train_items: pd.DataFrame,
    valid_items: pd.DataFrame,
    task: Task,
    out_dir: Path,
    device: torch.device,
    *,
    root: Path | None = None,
    log_path: Path | None = None,
    progress: bool = True,
) -> FoldResult:
    """Train on train_items, keep the epoch that scores best on all of valid_items."""
    from tqdm.auto import tqdm

    started = time.time()
    t, size = config.train, config.train.image_size
    metric = get_metric(config.metric.name, task.kind)
    generator = seed_everything(t.seed + fold)
    train_targets = task.encode(train_items["target"])
    valid_targets = task.encode(valid_items["target"])
    if t.batch_size > len(train_items):
        raise ConfigError(
            f"train.batch_size {t.batch_size} is larger than fold {fold}'s {len(train_items)} "
            "training images: lower train.batch_size"
        )

    # data: decode + resize + augment in the loader; uint8 batches, normalised on the device
    train_set = ImageDataset(
        train_items["path"],
        train_targets,
        create_transform(config.augment.train, size, "augment.train"),
    )
    valid_set = ImageDataset(
        valid_items["path"],
        valid_targets,
        create_transform(config.augment.valid, size, "augment.valid"),
    )
    loader_args = {
        "num_workers": t.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": t.num_workers > 0,
    }
    train_loader = DataLoader(
        train_set,
        batch_size=t.batch_size,
        shuffle=True,
        drop_last=len(train_set) > t.batch_size,  # a last batch of 1 breaks batch norm
        generator=generator,
        **loader_args,
    )
    valid_loader = DataLoader(valid_set, batch_size=t.batch_size * 2, shuffle=False, **loader_args)

    # model and optimisation: AdamW, linear warm-up then cosine decay, stepped per batch
    model = create_model(config.model, task.num_outputs, root=root).to(device)
    mean, std = input_stats(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    total_steps = t.epochs * len(train_loader)
    warmup_steps = max(1, round(t.warmup_epochs * len(train_loader)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(warmup_steps, total_steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, t.amp))

    best_score, best_epoch, best_probs = None, 0, None
    for epoch in range(1, t.epochs + 1):
        model.train()
        epoch_started, loss_sum, seen = time.time(), 0.0, 0
        bar = tqdm(
            train_loader, desc=f"fold {fold} epoch {epoch}/{t.epochs}", leave=False,
            disable=not progress, dynamic_ncols=True,
        )  # fmt: skip
        for images, targets in bar:
            x = normalise(to_unit_float(images, device), mean, std)
            y = targets.to(device, non_blocking=True)
            with autocast(device, t.amp):
                logits = model(x)
            loss = task.loss(logits, y, t.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")

        probs = predict_probs(model, valid_loader, device, mean, std, t.amp, task)
        score = metric.score(task, valid_targets, probs)
        improved = metric.better(score, best_score)
        if improved:
            best_score, best_epoch, best_probs = score, epoch, probs
            save_checkpoint(
                out_dir / "best.pt",
                {
                    "model": model.state_dict(),
                    "config": config.to_dict(),
                    "task": {"kind": task.kind, "classes": list(task.classes)},
                    "fold": fold,
                    "epoch": epoch,
                    "score": score,
                },
            )
        event = {
            "event": "epoch", "fold": fold, "epoch": epoch, "loss": loss_sum / max(seen, 1),
            metric.name: score, "best": improved, "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.time() - epoch_started, 3),
        }  # fmt: skip
        if log_path is not None:
            append_jsonl(log_path, event)
        if progress:
            mark = " *" if improved else ""
            tqdm.write(
                f"fold {fold} epoch {epoch:>3}/{t.epochs}  loss {event['loss']:.4f}  "
                f"{metric.name} {score:.4f}{mark}"
            )

    return FoldResult(fold, float(best_score), best_epoch, best_probs, time.time() - started)
