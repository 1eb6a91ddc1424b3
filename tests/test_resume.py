"""Exact resume: a training process killed with SIGKILL at a random step, resumed, must give the
OOF of an uninterrupted run; changed configs or folds are refused; saving never tears a file."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from kit.competition import Competition
from kit.data.folds import make_folds
from kit.errors import KitError
from kit.train.checkpoint import save_checkpoint
from kit.train.cv import train_run
from kit.train.loop import TrainingError

# deterministic CPU settings; a checkpoint after every optimiser step so any step can be the last
EXACT = [*TINY, "train.epochs=2", "train.checkpoint_every=1", "train.deterministic=true",
         "train.device=cpu", "train.ema_decay=0.9", "train.mixup_alpha=0.4"]  # fmt: skip


def read_oof(competition: Competition, run: str) -> pd.DataFrame:
    return pd.read_csv(competition.runs_dir / run / "oof.csv", dtype={"id": str}).set_index("id")


def kill_at_random_step(competition: Competition, run: str, seed: int) -> int:
    """Start `kit train` in a subprocess and SIGKILL it after a random number of checkpoints."""
    target = random.Random(seed).randint(2, 17)  # of 20 optimiser steps (2 folds x 2 x 5)
    command = [sys.executable, "-m", "kit", "train", "-C", str(competition.root), "--name", run,
               "--folds", "0,1", "--quiet", *[f"--set={o}" for o in EXACT]]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: set[tuple] = set()  # each atomic save is a new file (inode, mtime)
    deadline = time.time() + 300
    while len(seen) < target and process.poll() is None and time.time() < deadline:
        for path in (competition.runs_dir / run).glob("fold*/last.pt"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                seen.add((path.parent.name, stat.st_ino, stat.st_mtime_ns))
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    return len(seen)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(digits):
    competition = Competition.load(digits.root, EXACT)
    make_folds(competition)
    steps = kill_at_random_step(competition, "cut", seed=int(time.time()))
    assert steps >= 2
    assert not (competition.runs_dir / "cut" / "metrics.json").exists()  # it really was cut short
    resumed = train_run(competition, "cut", folds=[0, 1], resume=True, progress=False)
    reference = train_run(competition, "whole", folds=[0, 1], progress=False)
    cut, whole = read_oof(competition, "cut"), read_oof(competition, "whole")
    assert cut.index.tolist() == whole.index.tolist()
    np.testing.assert_allclose(cut.to_numpy(), whole.to_numpy(), rtol=0, atol=1e-6)
    assert resumed["cv"] == pytest.approx(reference["cv"], abs=1e-9)
    assert resumed["fold_ids"] == [0, 1] and resumed["best_epochs"] == reference["best_epochs"]


def test_resume_refuses_a_changed_config_or_folds(tiny):
    make_folds(tiny)
    train_run(tiny, "r", folds=[0], progress=False)
    changed = Competition.load(tiny.root, [*TINY, "train.lr=0.1"])
    with pytest.raises(KitError, match=r"config changed.*train.lr: 0.003 -> 0.1"):
        train_run(changed, "r", resume=True, progress=False)
    folds = pd.read_csv(tiny.folds_csv, dtype={"id": str})
    folds.loc[0, "fold"], folds.loc[1, "fold"] = folds.loc[1, "fold"], folds.loc[0, "fold"]
    if folds.loc[0, "fold"] == folds.loc[1, "fold"]:
        folds.loc[0, "fold"] = (folds.loc[0, "fold"] + 1) % 3
    folds.to_csv(tiny.folds_csv, index=False)
    with pytest.raises(KitError, match="folds.csv changed since the run started"):
        train_run(tiny, "r", resume=True, progress=False)


def test_folds_subset_then_resume_assembles_the_whole_run(tiny):
    make_folds(tiny)
    first = train_run(tiny, "split", folds=[0], progress=False)
    assert not first["complete"] and first["missing_folds"] == [1, 2]
    assert len(read_oof(tiny, "split")) == 40
    best = torch.load(tiny.runs_dir / "split" / "fold0" / "best.pt", weights_only=False)
    whole = train_run(tiny, "split", folds=[1, 2], resume=True, progress=False)
    assert whole["complete"] and whole["fold_ids"] == [0, 1, 2]
    assert len(read_oof(tiny, "split")) == 120
    # fold 0 was not trained again
    again = torch.load(tiny.runs_dir / "split" / "fold0" / "best.pt", weights_only=False)
    assert torch.equal(best["model"]["fc.weight"], again["model"]["fc.weight"])


def test_nan_loss_stops_the_fold_and_keeps_the_last_good_checkpoint(tiny):
    make_folds(tiny)
    competition = Competition.load(
        tiny.root, [*TINY, "train.lr=1e30", "train.warmup_epochs=0", "train.checkpoint_every=1"]
    )
    with pytest.raises(TrainingError, match=r"fold 0: the loss became (nan|inf).*lower train.lr"):
        train_run(competition, "boom", progress=False)
    last = torch.load(competition.runs_dir / "boom" / "fold0" / "last.pt", weights_only=False)
    assert last["progress"]["epoch"] == 1 and last["progress"]["batch"] >= 1


class DiskFull:
    """Pickling it fails the way a full disk does, halfway through writing the checkpoint."""

    def __reduce__(self):
        raise OSError(28, "No space left on device")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.arange(1000.0)})
    with pytest.raises(KitError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(path, {"step": 2, "weights": torch.zeros(1000), "bad": DiskFull()})
    kept = torch.load(path, weights_only=False)
    assert kept["step"] == 1 and torch.equal(kept["weights"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
