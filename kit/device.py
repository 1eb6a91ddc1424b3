"""Where tensors run, in which precision, and how uint8 batches become normalised inputs there."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from kit.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device asks for cuda but none is available: set it to auto or cpu")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA where supported, fp16 otherwise; full precision elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device, amp: bool) -> bool:
    return amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def to_unit_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW on the host -> float in [0, 1] on the device (4x less to copy than float)."""
    return batch.to(device, non_blocking=True).float().div_(255.0)


def normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
