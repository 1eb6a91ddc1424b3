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
from torch.utils.data import DataLoader, Subset

from kit.config import Config
from kit.data.bench import resolve_workers
from kit.data.cache import create_image_source
from kit.data.dataset import ImageDataset
from kit.data.transforms import create_transform
from kit.device import (
    DevicePrefetcher,
    autocast,
    intra_op_threads,
    needs_grad_scaler,
    normalise,
    seed_everything,
    set_threads,
    to_unit_float,
    tune_backend,
    worker_init,
)
from kit.errors import ConfigError, KitError
from kit.fileio import append_jsonl
from kit.metrics import get_metric
from kit.progress import Bar, echo
from kit.run import BEST_NAME, LAST_NAME
from kit.task import Task
from kit.train import ddp
from kit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kit.train.model import create_model, input_stats
from kit.train.recipe import WeightsEma, create_scheduler, mix_batch
from kit.train.sampling import EpochSampler, SeededItems, class_weights, item_seed, shard_indices

__all__ = ["FoldResult", "TrainingError", "predict_probs", "save_checkpoint", "train_fold"]


SYNC_EVERY = 25  # batches between reads of the loss on an accelerator (each read waits for it)


def kept_weights(*paths: Path) -> str:
    """What a stopped fold leaves, as it is on disk: the checkpoints that exist, or none."""
    kept = [str(p) for p in paths if p.exists()]
    if not kept:
        return "no checkpoint was saved yet (it failed before its first save)"
    verb = "keeps" if len(kept) == 1 else "keep"
    return f"{' and '.join(kept)} {verb} the last good weights"


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
    for images, _ in DevicePrefetcher(loader, device):
        x = normalise(to_unit_float(images, device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        outputs.append(task.activate(logits).cpu())
    return torch.cat(outputs).numpy()


@dataclass
class Loaders:
    """A fold's data: each rank draws its shard of a seeded epoch order; uint8 batches."""

    train: DataLoader
    valid: DataLoader
    sampler: EpochSampler
    valid_rows: np.ndarray  # this rank's rows of the validation fold
    n_valid: int


def check_batch_size(batch_size: int, fold: int, n_train: int, world: int) -> None:
    if batch_size > n_train:
        raise ConfigError(
            f"train.batch_size {batch_size} is larger than fold {fold}'s {n_train} "
            "training images: lower train.batch_size"
        )
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size {batch_size} does not split over {world} ranks: "
            f"make it a multiple of {world}"
        )


def create_loaders(
    config: Config,
    root,
    task: Task,
    train_items,
    train_targets,
    valid_items,
    valid_targets,
    *,
    seed: int,
    device,
    rank: int,
    world: int,
) -> Loaders:
    """The fold's DataLoaders, with workers and torch threads fitted to this machine."""
    t = config.train
    rank_batch = t.batch_size // world  # train.batch_size is the global batch of one step
    train_set = SeededItems(
        ImageDataset(
            train_items["path"],
            train_targets,
            create_transform(config.augment.train, t.image_size, "augment.train"),
            # bbox, preprocess, cache; reduced JPEG decode where the pipeline resizes first
            source=create_image_source(config, root, train_items, augment=config.augment.train),
        )
    )
    valid_set = ImageDataset(
        valid_items["path"],
        valid_targets,
        create_transform(config.augment.valid, t.image_size, "augment.valid"),
        source=create_image_source(config, root, valid_items, augment=config.augment.valid),
    )
    balanced = t.balance == "sampler" and task.single_label
    weights = class_weights(train_targets, task.num_outputs)[train_targets] if balanced else None
    sampler = EpochSampler(len(train_set), seed, rank=rank, world_size=world, weights=weights)
    # a core per worker and per rank: torch threads take what is left (train.threads overrides)
    workers, _ = resolve_workers(config, root, device, world)
    set_threads(intra_op_threads(workers, world, t.threads, load_aware=not t.deterministic))
    tune_backend(device, t.deterministic)
    loader_args = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
        "worker_init_fn": worker_init if workers > 0 else None,  # OpenCV: one thread per worker
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
    return Loaders(train_loader, valid_loader, sampler, valid_rows, len(valid_set))


@dataclass
class Recipe:
    """The model and everything that updates it: AdamW, per-step schedule, AMP scaler, EMA."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped for DDP when there are several ranks
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    ema: WeightsEma | None
    ema_model: torch.nn.Module | None
    body: list  # parameters outside the classifier head (frozen for train.freeze_epochs)
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool
    loss_weights: torch.Tensor | None  # class weights of train.balance = "loss"

    def state(self) -> dict:
        """What last.pt keeps of the recipe."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state if self.ema else None,
        }

    def restore(self, saved: dict, device) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and saved.get("ema") is not None:
            self.ema.state = {k: v.to(device) for k, v in saved["ema"].items()}

    def step(self, t, frozen: bool) -> None:
        """One optimiser step on the accumulated gradients."""
        if frozen:  # the head learns first; the body's gradients are dropped
            for p in self.body:
                p.grad = None
        if t.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def candidates(self) -> list[tuple[str, torch.nn.Module]]:
        """The weights scored at an epoch's end: the raw ones, and the EMA's when it is on."""
        if self.ema is None:
            return [("raw", self.model)]
        self.ema_model.load_state_dict(self.ema.state)
        return [("raw", self.model), ("ema", self.ema_model)]


def create_recipe(
    config: Config, task: Task, root, device, *, world: int, train_targets, batches_per_epoch: int
) -> Recipe:
    t = config.train
    model = create_model(config.model, task.num_outputs, root=root).to(device)
    mean, std = input_stats(model)
    channels_last = t.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = {id(p) for p in model.get_classifier().parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = -(-batches_per_epoch // t.accumulate)
    scheduler = create_scheduler(optimizer, t, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, t.amp))
    ema = WeightsEma(model, t.ema_decay) if t.ema_decay > 0 else None
    loss_weights = None
    if t.balance == "loss" and task.single_label:
        weights = class_weights(train_targets, task.num_outputs)
        loss_weights = torch.tensor(weights, dtype=torch.float32, device=device)
    return Recipe(
        model,
        net,
        optimizer,
        scheduler,
        scaler,
        ema,
        copy.deepcopy(model) if ema else None,
        body,
        mean,
        std,
        channels_last,
        loss_weights,
    )


def best_of(
    candidates,
    loaders: Loaders,
    valid_targets,
    task: Task,
    metric,
    recipe: Recipe,
    device,
    amp: bool,
) -> list[tuple]:
    """Every candidate's (score, name, weights, probs) over the whole validation fold, best
    first (raw wins ties): each rank predicts its shard, gathered, padding dropped."""
    scored = []
    for name, weights in candidates:
        shard = predict_probs(
            weights, loaders.valid, device, recipe.mean, recipe.std, amp, task, recipe.channels_last
        )
        probs = ddp.gather_rows(loaders.valid_rows, shard, loaders.n_valid)
        scored.append((metric.score(task, valid_targets, probs), name, weights, probs))
    best = scored[0]
    for candidate in scored[1:]:
        if metric.better(candidate[0], best[0]):
            best = candidate
    return [best, *[c for c in scored if c is not best]]


def new_progress() -> dict:
    """A fold's position and bests before its first step (last.pt saves it as "progress")."""
    return {
        "epoch": 1,
        "batch": 0,
        "loss_sum": 0.0,
        "seen": 0,
        "best_score": None,
        "best_epoch": 0,
        "best_probs": None,
        "stale": 0,
        "stopped": False,
        "history": [],
    }


def load_progress(last_path: Path, recipe: Recipe, device) -> dict:
    """Resume: the recipe, RNG and position saved in last.pt (a fresh start when there is none)."""
    if not last_path.exists():
        return new_progress()
    saved = load_checkpoint(last_path)
    recipe.restore(saved, device)
    set_rng_state(saved["rng"])
    return saved["progress"]


def forward_loss(
    recipe: Recipe, criterion, images, targets, t, epoch: int, mix_seed: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's loss (mixup/cutmix mixes two targets' losses) and its targets on the device."""
    x = normalise(to_unit_float(images, device), recipe.mean, recipe.std)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = targets.to(device, non_blocking=True)
    x, y_a, y_b, lam = mix_batch(x, y, t, epoch, mix_seed)
    with autocast(device, t.amp):
        logits = recipe.net(x)
    loss = criterion(logits, y_a)
    if lam < 1.0:
        loss = lam * loss + (1.0 - lam) * criterion(logits, y_b)
    return loss, y


def raise_if_not_finite(
    finite,
    fold: int,
    epoch: int,
    batch_index: int,
    since: int,
    best_path: Path,
    last_path: Path,
    loss=None,
) -> None:
    """A TrainingError when the loss of any rank went non-finite since the last check."""
    if not ddp.any_rank(not bool(finite)):
        return
    where = f"batch {batch_index + 1}"
    if since < batch_index:
        where = f"batches {since + 1}-{batch_index + 1}"
    value = float(loss) if loss is not None else float("nan")
    became = value if not np.isfinite(value) else "non-finite"  # nan, inf, or an earlier batch's
    raise TrainingError(
        f"fold {fold}: the loss became {became} at epoch {epoch}, {where}: lower "
        "train.lr, set train.clip_grad_norm, or set train.amp = false; "
        + kept_weights(best_path, last_path)
    )


def running_figures(state: dict, metric_name: str, last_score: float | None) -> dict:
    """The progress bar's figures: the epoch's running loss, and the last validation score."""
    shown = {"loss": f"{state['loss_sum'] / state['seen']:.4f}"}
    if last_score is not None:
        shown[metric_name] = f"{last_score:.4f}"
    return shown


def finish_epoch(
    state: dict,
    scored: list[tuple],
    *,
    config: Config,
    fold: int,
    epoch: int,
    task: Task,
    metric,
    valid_targets,
    best_path: Path,
    main: bool,
    lr: float,
    seconds: float,
) -> dict:
    """Keep the epoch if it is the best so far (best.pt), count patience, and return its event
    (what log.jsonl, the trackers and the report read)."""
    score, weights_name, weights, probs = scored[0]
    improved = metric.better(score, state["best_score"])
    if improved:
        state.update(best_score=score, best_epoch=epoch, best_probs=probs, stale=0)
        if main:
            save_checkpoint(
                best_path,
                {
                    "model": weights.state_dict(),
                    "config": config.to_dict(),
                    "task": {"kind": task.kind, "classes": list(task.classes)},
                    "fold": fold,
                    "epoch": epoch,
                    "score": score,
                    "weights": weights_name,
                },
            )
    else:
        state["stale"] += 1
    by_name = {name: s for s, name, _, _ in scored}
    event = {
        "event": "epoch",
        "fold": fold,
        "epoch": epoch,
        "loss": state["loss_sum"] / max(state["seen"], 1),
        metric.name: score,
        "val_loss": task.validation_loss(valid_targets, probs),
        "raw": by_name["raw"],
        "ema": by_name.get("ema"),
        "weights": weights_name,
        "best": improved,
        "lr": lr,
        "seconds": round(seconds, 3),
    }
    state["history"].append(event)
    state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, seen=0)
    patience = config.train.patience
    state["stopped"] = bool(patience) and state["stale"] >= patience
    return event


def fold_result(state: dict, fold: int, metric_name: str, started: float) -> FoldResult:
    """The fold's best epoch, or a TrainingError when every epoch scored NaN (none was kept)."""
    if state["best_score"] is None:
        raise TrainingError(
            f"fold {fold}: {metric_name} was undefined at every epoch (its validation fold may "
            "hold a single class): use fewer folds (folds.n_splits) or another metric"
        )
    seconds = sum(e["seconds"] for e in state["history"]) or time.time() - started
    return FoldResult(
        fold,
        float(state["best_score"]),
        state["best_epoch"],
        state["best_probs"],
        seconds,
        state["history"],
    )


def print_epoch(fold: int, epochs: int, event: dict, metric_name: str, improved: bool) -> None:
    mark = " *" if improved else ""
    echo(
        f"fold {fold} epoch {event['epoch']:>3}/{epochs}  loss {event['loss']:.4f}  "
        f"{metric_name} {event[metric_name]:.4f} ({event['weights']}){mark}  "
        f"{event['seconds']:.1f}s  lr {event['lr']:.2e}"
    )


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
    on_epoch=None,
    on_step=None,
    run_progress=None,
) -> FoldResult:
    """Train on train_items, keep the epoch (raw or EMA weights) that scores best on valid_items.

    on_epoch(event): called on rank 0 with each epoch event of log.jsonl (experiment tracking);
    on_step(optimizer, loss): called after each optimiser step (the lr finder sets the next lr).
    run_progress: a kit.progress.RunProgress that prints the run-level line after each epoch.
    """
    started = time.time()
    t = config.train
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
    check_batch_size(t.batch_size, fold, len(train_items), world)
    rank_batch = t.batch_size // world

    # data, then the model and its recipe (AdamW, schedule, AMP, channels_last, EMA, freezing)
    loaders = create_loaders(
        config,
        root,
        task,
        train_items,
        train_targets,
        valid_items,
        valid_targets,
        seed=seed,
        device=device,
        rank=rank,
        world=world,
    )
    batches_per_epoch = len(loaders.train)
    recipe = create_recipe(
        config,
        task,
        root,
        device,
        world=world,
        train_targets=train_targets,
        batches_per_epoch=batches_per_epoch,
    )

    def criterion(logits, targets):
        return task.loss(logits, targets, t.label_smoothing, class_weights=recipe.loss_weights)

    # progress: everything below is what last.pt restores
    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME
    state = load_progress(last_path, recipe, device) if resume else new_progress()

    def save_last() -> None:
        if main:
            save_checkpoint(
                last_path,
                {
                    **recipe.state(),
                    "rng": rng_state(),
                    "progress": state,
                    "config": config.to_dict(),
                    "fold": fold,
                },
            )

    # no host sync per step: the loss sum and a finite flag stay on the device and are read every
    # sync_every batches (a CPU has nothing to overlap, so it checks every batch, as before); the
    # sum is float64 and sequential, so it equals the old per-step .item() sum bit for bit
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64

    def check_finite(finite, batch_index: int, since: int, loss) -> None:
        raise_if_not_finite(finite, fold, epoch, batch_index, since, best_path, last_path, loss)

    last_score = None
    for epoch in range(state["epoch"], t.epochs + 1):
        if state["stopped"]:
            break
        recipe.net.train()
        epoch_started = time.time()
        frozen = epoch <= t.freeze_epochs
        loaders.sampler.set_epoch(epoch, state["batch"] * rank_batch)
        bar = Bar(
            DevicePrefetcher(loaders.train, device),
            desc=f"fold {fold} epoch {epoch}/{t.epochs}",
            initial=state["batch"],
            total=batches_per_epoch,
            enabled=progress and main,
        )
        loss_sum = torch.tensor(state["loss_sum"], dtype=sum_dtype, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        checked = state["batch"]  # batches up to here are known finite
        for batch_index, (images, targets) in enumerate(bar, start=state["batch"]):
            mix_seed = item_seed(seed, epoch, 2, batch_index * world + rank)
            loss, y = forward_loss(recipe, criterion, images, targets, t, epoch, mix_seed, device)
            finite = finite & torch.isfinite(loss.detach())
            last_batch = batch_index + 1 == batches_per_epoch
            synced = (batch_index + 1) % sync_every == 0 or last_batch
            if synced:  # before the step, so a non-finite loss never reaches the weights on CPU
                check_finite(finite, batch_index, checked, loss.detach())
                checked = batch_index + 1
            recipe.scaler.scale(loss / t.accumulate).backward()
            boundary = (batch_index + 1) % t.accumulate == 0 or last_batch
            if boundary:
                recipe.step(t, frozen)
                if on_step is not None:
                    on_step(recipe.optimizer, loss.detach())
            loss_sum += loss.detach().to(sum_dtype) * len(y)
            state["seen"] += len(y)
            steps = recipe.scheduler.last_epoch  # optimiser steps so far
            due = boundary and t.checkpoint_every and steps % t.checkpoint_every == 0
            due = due and not last_batch  # the epoch's end saves anyway
            if synced or due:
                if due:  # last.pt must never keep weights a non-finite loss has touched
                    check_finite(finite, batch_index, checked, loss.detach())
                    checked = batch_index + 1
                state["loss_sum"] = loss_sum.item()
                bar.set_postfix(**running_figures(state, metric.name, last_score))
            if due:
                state["batch"] = batch_index + 1
                save_last()

        # validation over the whole fold: raw and EMA weights, the better one counts
        scored = best_of(
            recipe.candidates(), loaders, valid_targets, task, metric, recipe, device, t.amp
        )
        last_score = scored[0][0]
        event = finish_epoch(
            state,
            scored,
            config=config,
            fold=fold,
            epoch=epoch,
            task=task,
            metric=metric,
            valid_targets=valid_targets,
            best_path=best_path,
            main=main,
            lr=recipe.scheduler.get_last_lr()[0],
            seconds=time.time() - epoch_started,
        )
        if main and log_path is not None:
            append_jsonl(log_path, event)
        if main and on_epoch is not None:
            on_epoch(event)
        save_last()
        if progress and main:
            print_epoch(fold, t.epochs, event, metric.name, event["best"])
            if run_progress is not None:
                run_progress.epoch_done(fold, epoch, event["seconds"], state["stopped"])

    return fold_result(state, fold, metric.name, started)
