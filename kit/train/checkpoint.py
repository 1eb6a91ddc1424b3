"""Checkpoints: written atomically, with everything an exact resume needs, read without unpickling.

A checkpoint is a pickle, and unpickling runs whatever the file says: a `best.pt` from someone
else's run folder could execute code. So every checkpoint kit reads goes through load_checkpoint,
which uses torch's weights-only unpickler with a short allowlist (tensors, plain Python values and
the numpy arrays, dtypes and scalars of RNG states and OOF probabilities); anything else is refused.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from kit.errors import KitError
from kit.fileio import atomic_open


class CheckpointError(KitError):
    """A checkpoint that cannot be read, holds more than weights and plain values, or fits not."""


def _numpy_globals() -> list:
    """The numpy types an exact-resume checkpoint holds: arrays, dtypes and scalars, no code."""
    core = getattr(np, "_core", None) or np.core
    dtype_classes = [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and name not in ("ObjectDType", "StringDType", "VoidDType")
    ]
    return [
        np.ndarray,
        np.dtype,
        core.multiarray._reconstruct,
        core.multiarray.scalar,
        *dtype_classes,
    ]


SAFE_GLOBALS = _numpy_globals()


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C during a save is held until the save is done (torch would turn it into a write
    error), then raised as usual: the checkpoint is whole and the interrupt still lands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def save_checkpoint(path: Path, state: dict) -> None:
    """Temp file then rename: a crash while saving keeps the previous checkpoint intact."""
    try:
        with _interrupts_deferred(), atomic_open(path, "wb") as handle:
            torch.save(state, handle)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        previous = "the previous checkpoint is intact" if path.exists() else "nothing was saved"
        detail = getattr(error, "strerror", None) or " ".join(str(error).split())[:120]
        raise KitError(
            f"could not save {path} ({detail}); {previous}: free disk space or fix the "
            "folder's permissions, then `kit train --resume`"
        ) from None


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's dict, read with the weights-only unpickler (never arbitrary objects)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than weights and plain values, so kit will not load it "
            "(unpickling could run code from the file): use checkpoints kit wrote, or retrain"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: train the fold first") from None
    except Exception as error:  # a torn or foreign file: say which and what to do
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}): delete it to restart that fold"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a kit checkpoint (a {type(state).__name__})")
    return state


def load_weights(path: Path, keys: tuple[str, ...] = ("model",)) -> dict:
    """A best.pt for prediction: load_checkpoint, then check it holds the keys prediction needs."""
    state = load_checkpoint(path)
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it is not a kit fold checkpoint; retrain the run"
        )
    return state


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
