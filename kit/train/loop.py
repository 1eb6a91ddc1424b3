"""Training one fold, top to bottom: data, model, recipe, resume, epochs, best checkpoint.

Read it as the loop you would write by hand. Everything that varies is a [train] field of
kit.toml; everything an exact resume needs is saved in last.pt at optimiser-step boundaries.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from kit.config import Config
from kit.data.cache import create_image_source
from kit.data.dataset import ImageDataset
from kit.data.transforms import create_transform
from kit.device import autocast, needs_grad_scaler, normalise, seed_everything, to_unit_float
from kit.errors import ConfigError, KitError
from kit.fileio import append_jsonl
from kit.metrics import get_metric
from kit.task import Task
from kit.train import ddp
from kit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kit.train.model import create_model, input_stats
from kit.train.recipe import WeightsEma, check_recipe, create_scheduler, mix_batch
from kit.train.sampling import EpochSampler, SeededItems, class_weights, item_seed, shard_indices

__all__ = ["FoldResult", "TrainingError", "predict_probs", "save_checkpoint", "train_fold"]


class TrainingError(KitError):
    """Training cannot go on (a NaN loss); the last good checkpoints are kept."""


@dataclass
class FoldResult:
    fold: int
    score: float  # the competition metric of the best epoch, over the whole validation fold
    epoch: int  # best epoch, counted from 1
    probs: np.ndarray  # (n_valid, task.num_outputs) predictions of the best epoch, valid order
    seconds: float
    history: list[dict] = field(default_factory=list)  # the fold's epoch events


@torch.no_grad()
def predict_probs(model, loader, device, mean, std, amp: bool, task: Task, channels_last=False):
    model.eval()
    outputs = []
    for images, _ in loader:
        x = normalise(to_unit_float(images, device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
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
    resume: bool = False,
    train_targets: np.ndarray | None = None,
) -> FoldResult:
    """Train on train_items, keep the epoch (raw or EMA weights) that scores best on valid_items."""
    from tqdm.auto import tqdm

    started = time.time()
    t = config.train
    check_recipe(t)
    metric = get_metric(config.metric.name, task.kind)
    rank, world = ddp.rank_and_world()
    main = rank == 0
    seed = t.seed + fold
    seed_everything(seed)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if train_targets is None:  # stage 2 passes soft target rows (pseudo-labels) instead
        train_targets = task.encode(train_items["target"])
    valid_targets = task.encode(valid_items["target"])
    if t.batch_size > len(train_items):
        raise ConfigError(
            f"train.batch_size {t.batch_size} is larger than fold {fold}'s {len(train_items)} "
            "training images: lower train.batch_size"
        )
    if t.batch_size % world:
        raise ConfigError(
            f"train.batch_size {t.batch_size} does not split over {world} ranks: "
            f"make it a multiple of {world}"
        )
    rank_batch = t.batch_size // world  # train.batch_size is the global batch of one step
    single_label = task.kind in ("multiclass", "binary")

    # data: each rank draws its shard of a seeded epoch order; uint8 batches, normalised on device
    train_set = SeededItems(
        ImageDataset(
            train_items["path"],
            train_targets,
            create_transform(config.augment.train, t.image_size, "augment.train"),
            source=create_image_source(config, root, train_items),  # bbox, preprocess, cache
        )
    )
    valid_set = ImageDataset(
        valid_items["path"],
        valid_targets,
        create_transform(config.augment.valid, t.image_size, "augment.valid"),
        source=create_image_source(config, root, valid_items),
    )
    balanced = t.balance == "sampler" and single_label
    sampler = EpochSampler(
        len(train_set), seed, rank=rank, world_size=world,
        weights=class_weights(train_targets, task.num_outputs)[train_targets] if balanced else None,
    )  # fmt: skip
    loader_args = {
        "num_workers": t.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": t.num_workers > 0,
    }
    train_loader = DataLoader(
        train_set,
        batch_size=rank_batch,
        sampler=sampler,
        drop_last=len(sampler) > rank_batch,  # a last batch of 1 breaks batch norm
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG for the model
        **loader_args,
    )
    valid_rows = shard_indices(len(valid_set), rank, world)
    valid_loader = DataLoader(
        Subset(valid_set, valid_rows), batch_size=rank_batch * 2, shuffle=False, **loader_args
    )

    # model and recipe: AdamW, per-step schedule, AMP, channels_last, EMA, optional frozen body
    model = create_model(config.model, task.num_outputs, root=root).to(device)
    mean, std = input_stats(model)
    channels_last = t.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = {id(p) for p in model.get_classifier().parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    batches_per_epoch = len(train_loader)
    steps_per_epoch = -(-batches_per_epoch // t.accumulate)
    scheduler = create_scheduler(optimizer, t, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, t.amp))
    ema = WeightsEma(model, t.ema_decay) if t.ema_decay > 0 else None
    ema_model = copy.deepcopy(model) if ema else None
    loss_weights = None
    if t.balance == "loss" and single_label:
        weights = class_weights(train_targets, task.num_outputs)
        loss_weights = torch.tensor(weights, dtype=torch.float32, device=device)

    def criterion(logits, targets):
        if loss_weights is not None:
            return F.cross_entropy(
                logits.float(), targets, weight=loss_weights, label_smoothing=t.label_smoothing
            )
        return task.loss(logits, targets, t.label_smoothing)

    # progress: everything below is what last.pt restores
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = {
        "epoch": 1, "batch": 0, "loss_sum": 0.0, "seen": 0, "best_score": None,
        "best_epoch": 0, "best_probs": None, "stale": 0, "stopped": False, "history": [],
    }  # fmt: skip
    if resume and last_path.exists():
        saved = load_checkpoint(last_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None and saved.get("ema") is not None:
            ema.state = {k: v.to(device) for k, v in saved["ema"].items()}
        set_rng_state(saved["rng"])
        state = saved["progress"]

    def save_last() -> None:
        if main:
            save_checkpoint(
                last_path,
                {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ema.state if ema else None, "rng": rng_state(), "progress": state,
                    "config": config.to_dict(), "fold": fold,
                },
            )  # fmt: skip

    last_score = None
    for epoch in range(state["epoch"], t.epochs + 1):
        if state["stopped"]:
            break
        net.train()
        epoch_started = time.time()
        frozen = epoch <= t.freeze_epochs  # the head learns first; the body's grads are dropped
        sampler.set_epoch(epoch, state["batch"] * rank_batch)
        bar = tqdm(
            train_loader, desc=f"fold {fold} epoch {epoch}/{t.epochs}", leave=False,
            initial=state["batch"], total=batches_per_epoch, disable=not (progress and main),
            dynamic_ncols=True,
        )  # fmt: skip
        for batch_index, (images, targets) in enumerate(bar, start=state["batch"]):
            x = normalise(to_unit_float(images, device), mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = targets.to(device, non_blocking=True)
            x, y_a, y_b, lam = mix_batch(
                x, y, t, epoch, item_seed(seed, epoch, 2, batch_index * world + rank)
            )
            with autocast(device, t.amp):
                logits = net(x)
            loss = criterion(logits, y_a)
            if lam < 1.0:
                loss = lam * loss + (1.0 - lam) * criterion(logits, y_b)
            if ddp.any_rank(not torch.isfinite(loss).item()):
                raise TrainingError(
                    f"fold {fold}: the loss became {loss.item()} at epoch {epoch}, batch "
                    f"{batch_index + 1}: lower train.lr, set train.clip_grad_norm, or set "
                    f"train.amp = false; {best_path} and {last_path} keep the last good weights"
                )
            scaler.scale(loss / t.accumulate).backward()
            boundary = (batch_index + 1) % t.accumulate == 0 or batch_index + 1 == batches_per_epoch
            if boundary:
                if frozen:
                    for p in body:
                        p.grad = None
                if t.clip_grad_norm > 0:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update(model)
            state["loss_sum"] += loss.item() * len(y)
            state["seen"] += len(y)
            bar.set_postfix(
                loss=f"{state['loss_sum'] / state['seen']:.4f}",
                **({metric.name: f"{last_score:.4f}"} if last_score is not None else {}),
            )
            steps = scheduler.last_epoch  # optimiser steps so far
            due = boundary and t.checkpoint_every and steps % t.checkpoint_every == 0
            if due and batch_index + 1 < batches_per_epoch:  # the epoch's end saves anyway
                state["batch"] = batch_index + 1
                save_last()

        # validation: every rank predicts its shard; gathered, padding dropped, scored as a whole
        candidates = [("raw", model)]
        if ema is not None:
            ema_model.load_state_dict(ema.state)
            candidates.append(("ema", ema_model))
        scored = []
        for name, weights in candidates:
            shard = predict_probs(weights, valid_loader, device, mean, std, t.amp, task,
                                  channels_last)  # fmt: skip
            probs = ddp.gather_rows(valid_rows, shard, len(valid_set))
            scored.append((metric.score(task, valid_targets, probs), name, weights, probs))
        score, weights_name, weights, probs = scored[0]
        for candidate in scored[1:]:
            if metric.better(candidate[0], score):
                score, weights_name, weights, probs = candidate
        last_score = score
        improved = metric.better(score, state["best_score"])
        if improved:
            state.update(best_score=score, best_epoch=epoch, best_probs=probs, stale=0)
            if main:
                save_checkpoint(
                    best_path,
                    {
                        "model": weights.state_dict(), "config": config.to_dict(),
                        "task": {"kind": task.kind, "classes": list(task.classes)},
                        "fold": fold, "epoch": epoch, "score": score, "weights": weights_name,
                    },
                )  # fmt: skip
        else:
            state["stale"] += 1
        event = {
            "event": "epoch", "fold": fold, "epoch": epoch,
            "loss": state["loss_sum"] / max(state["seen"], 1), metric.name: score,
            "raw": scored[0][0], "ema": scored[1][0] if ema else None, "weights": weights_name,
            "best": improved, "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.time() - epoch_started, 3),
        }  # fmt: skip
        state["history"].append(event)
        state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, seen=0)
        state["stopped"] = bool(t.patience) and state["stale"] >= t.patience
        if main and log_path is not None:
            append_jsonl(log_path, event)
        save_last()
        if progress and main:
            mark = " *" if improved else ""
            tqdm.write(
                f"fold {fold} epoch {epoch:>3}/{t.epochs}  loss {event['loss']:.4f}  "
                f"{metric.name} {score:.4f} ({weights_name}){mark}"
            )

    return FoldResult(
        fold, float(state["best_score"]), state["best_epoch"], state["best_probs"],
        sum(e["seconds"] for e in state["history"]) or time.time() - started, state["history"],
    )  # fmt: skip
