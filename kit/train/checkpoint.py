"""Checkpoints: written atomically, with everything an exact resume needs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from kit.errors import KitError
from kit.fileio import atomic_open


def save_checkpoint(path: Path, state: dict) -> None:
    """Temp file then rename: a crash while saving keeps the previous checkpoint intact."""
    try:
        with atomic_open(path, "wb") as handle:
            torch.save(state, handle)
    except OSError as error:
        raise KitError(
            f"could not save {path} ({error.strerror or error}); the previous checkpoint is "
            "intact: free disk space or fix the folder's permissions, then `kit train --resume`"
        ) from None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a torn or foreign file: say which and what to do
        raise KitError(
            f"{path} cannot be read ({type(error).__name__}): delete it to restart that fold"
        ) from None


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
