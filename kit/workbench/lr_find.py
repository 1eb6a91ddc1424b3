"""The lr range test: fold 0 trains with the run's recipe while the lr grows exponentially.

It runs kit's own fold loop (kit.train.loop.train_fold: the same data, augmentations, model,
AdamW, AMP, mixup and loss as `kit train`); a per-step hook records the loss of each optimiser
step and sets the next step's lr, and stops once the loss diverges. The suggestion follows fastai:

- valley: the lr halfway along the longest stretch over which the smoothed loss keeps falling
  (fastai's default; robust to a noisy curve);
- steepest: where the smoothed loss falls fastest per decade of lr.

Artefacts (fixed names, relative to the competition folder; report.html may embed the PNG):
runs/lr_find/lr_find.png (loss against lr, both suggestions marked) and runs/lr_find/lr_find.json.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kit.competition import Competition
from kit.config import CONFIG_NAME, set_toml_value
from kit.data.folds import training_table
from kit.device import pick_device
from kit.errors import ConfigError, KitError
from kit.fileio import atomic_open, write_json
from kit.train.loop import TrainingError, train_fold
from kit.train.recipe import check_components

RULES = ("valley", "steepest")
LR_FIND_DIR = "lr_find"  # under runs/
SMOOTHING = 0.98  # EMA factor of the loss curve (debiased), as fastai's recorder
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
SKIP_END = 5  # points left off the end (the divergence) before suggesting, as fastai


class _RangeDone(Exception):
    """Raised from the step hook to end the range test (enough steps, or the loss diverged)."""


def lr_find_dir(competition: Competition) -> Path:
    return competition.runs_dir / LR_FIND_DIR


def find_lr(
    competition: Competition,
    *,
    fold: int = 0,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    rule: str = "valley",
    write: bool = False,
    progress: bool = True,
) -> dict:
    """Run the range test on `fold`'s training part; write the PNG and JSON; return the result.

    write: put the suggested lr into kit.toml's [train] lr line (only that line changes).
    """
    if rule not in RULES:
        raise ConfigError(f"--rule {rule!r} is unknown: use {' or '.join(RULES)}")
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"--start {start_lr:g} and --end {end_lr:g}: need 0 < start < end")
    if num_iter < 10:
        raise ConfigError(f"--iters {num_iter}: the range test needs at least 10 steps")
    config = copy.deepcopy(competition.config)
    check_components(config)
    table, task = training_table(competition)
    folds = sorted(table["fold"].unique().tolist())
    if fold not in folds:
        raise KitError(f"--fold {fold} not in folds.csv (folds: {folds})")
    valid = table["fold"] == fold
    train_items = table[~valid].reset_index(drop=True)
    valid_items = table[valid].reset_index(drop=True)

    t = config.train
    batches = max(1, len(train_items) // t.batch_size)
    steps_per_epoch = -(-batches // t.accumulate)
    # the recipe as `kit train` runs it, but one lr per step, set by the hook below
    config.train = dataclasses.replace(
        t,
        lr=start_lr,
        warmup_epochs=0.0,
        schedule="cosine",
        patience=0,
        checkpoint_every=0,
        epochs=max(t.freeze_epochs, 0) + -(-num_iter // steps_per_epoch) + 1,
    )
    ratio = (end_lr / start_lr) ** (1.0 / (num_iter - 1))
    record = {"lrs": [], "losses": [], "smoothed": [], "stopped": "num_iter"}
    current = {"lr": start_lr, "average": 0.0, "best": math.inf}

    def on_step(optimizer, loss) -> None:
        value = float(loss)
        step = len(record["lrs"])
        if not math.isfinite(value):
            record["stopped"] = "diverged"
            raise _RangeDone
        current["average"] = SMOOTHING * current["average"] + (1 - SMOOTHING) * value
        smoothed = current["average"] / (1 - SMOOTHING ** (step + 1))
        record["lrs"].append(current["lr"])
        record["losses"].append(value)
        record["smoothed"].append(smoothed)
        current["best"] = min(current["best"], smoothed)
        if smoothed > DIVERGED * current["best"]:
            record["stopped"] = "diverged"
            raise _RangeDone
        if step + 1 >= num_iter:
            raise _RangeDone
        current["lr"] *= ratio
        for group in optimizer.param_groups:
            group["lr"] = current["lr"]

    device = pick_device(t.device)
    out_dir = lr_find_dir(competition)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out_dir, prefix=".fold-"))  # best.pt/last.pt, discarded
    try:
        train_fold(
            config,
            fold,
            train_items,
            valid_items,
            task,
            scratch,
            device,
            root=competition.root,
            progress=progress,
            on_step=on_step,
        )
    except _RangeDone:
        pass
    except TrainingError:  # a non-finite loss the loop caught before the hook saw it
        record["stopped"] = "diverged"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(record["lrs"]) < 10:
        raise KitError(
            f"the range test stopped after {len(record['lrs'])} steps: lower --start "
            f"(now {start_lr:g}) or check the data; fold {fold} has {len(train_items)} images"
        )

    suggestions = suggest(record["lrs"], record["smoothed"])
    suggested = suggestions[rule]
    result = {
        "fold": fold,
        "model": config.model.name,
        "batch_size": t.batch_size,
        "rule": rule,
        "suggested_lr": suggested,
        **suggestions,
        "current_lr": t.lr,
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_iter": num_iter,
        "steps": len(record["lrs"]),
        "stopped": record["stopped"],
        "png": str(out_dir / "lr_find.png"),
        "json": str(out_dir / "lr_find.json"),
        **{k: record[k] for k in ("lrs", "losses", "smoothed")},
    }
    plot_lr_find(result, out_dir / "lr_find.png")
    write_json(out_dir / "lr_find.json", result)
    if write:  # only that line of kit.toml changes; its comment stays
        line = set_toml_value(
            competition.root / CONFIG_NAME, "train", "lr", repr(suggested), by="kit lr-find"
        )
        result["written"] = f"{competition.root / CONFIG_NAME}: [train] {line}"
    return result


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """{'valley': lr, 'steepest': lr}, each rounded to 3 significant digits."""
    # as fastai: without the first tenth (the smoothing has not settled) and the last points
    first = len(lrs) // 10
    last = len(lrs) - SKIP_END if len(lrs) - SKIP_END - first >= 3 else len(lrs)
    lrs_arr = np.asarray(lrs[first:last], dtype=float)
    loss = np.asarray(smoothed[first:last], dtype=float)
    n = len(loss)
    # valley (fastai): the longest decreasing subsequence of the loss; halfway along it
    longest = np.ones(n, dtype=int)
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    valley = int(min(max(start + int(third) + int(third / 2), 0), n - 1))
    steepest = int(np.argmin(np.gradient(loss, np.log10(lrs_arr))))
    return {"valley": _round(lrs_arr[valley]), "steepest": _round(lrs_arr[steepest])}


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def plot_lr_find(result: dict, path: Path) -> Path:
    """Loss against lr (log axis), raw and smoothed, with the two suggestions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(result["lrs"], result["losses"], color="#bbbbbb", lw=1, label="loss per step")
    ax.plot(result["lrs"], result["smoothed"], color="#1f4e79", lw=2, label="smoothed")
    for name, colour in (("valley", "#d62728"), ("steepest", "#2ca02c")):
        lr = result[name]
        chosen = " (suggested)" if name == result["rule"] else ""
        ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{name} {lr:.3g}{chosen}")
    ax.set_xscale("log")
    top = np.percentile(result["smoothed"], 95)
    bottom = min(min(result["smoothed"]), float(np.percentile(result["losses"], 2)))
    ax.set_ylim(bottom - 0.05 * (top - bottom + 1e-9), top + 0.25 * (top - bottom + 1e-9))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"lr range test, fold {result['fold']}: {result['model']}, batch {result['batch_size']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path
