"""The parts of a training recipe that are not the loop itself: schedules, EMA, mixup/cutmix."""

from __future__ import annotations

import math

import numpy as np
import torch

from kit.data.transforms import build_steps
from kit.train.model import check_model_name


def check_components(config) -> None:
    """What kit.toml names that only timm and albumentations can judge: checked before a run exists.

    The model name must be a timm architecture; every pipeline (augment.train, augment.valid,
    data.preprocess) must build, with no unknown transform or argument. Types, choices and ranges
    are checked earlier, when kit.toml is loaded (kit/config.py).
    """
    check_model_name(config.model.name)
    build_steps(config.augment.train, "augment.train")
    build_steps(config.augment.valid, "augment.valid")
    build_steps(config.data.preprocess, "data.preprocess")


def create_scheduler(optimizer, t, steps_per_epoch: int):
    """Per-optimiser-step learning rate: warm-up + cosine, or one-cycle."""
    total = t.epochs * steps_per_epoch
    if t.schedule == "onecycle":
        warm = min(0.5, max(t.warmup_epochs * steps_per_epoch, 1) / total)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=t.lr, total_steps=total, pct_start=warm
        )
    warmup = max(1, round(t.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightsEma:
    """An exponential moving average of a model's state (buffers copied as they are)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model) -> None:
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].lerp_(value, 1.0 - self.decay)
            else:
                self.state[key].copy_(value)


def mix_batch(x, y, t, epoch: int, seed: int):
    """Mixup or cutmix on a batch: (x, y, y_other, lam); lam = 1 when mixing is off."""
    off = t.mix_until_epoch and epoch >= t.mix_until_epoch
    if off or (t.mixup_alpha <= 0 and t.cutmix_alpha <= 0):
        return x, y, y, 1.0
    rng = np.random.default_rng(seed)
    use_cutmix = t.cutmix_alpha > 0 and (t.mixup_alpha <= 0 or rng.random() < 0.5)
    alpha = t.cutmix_alpha if use_cutmix else t.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, y, y[perm], lam
