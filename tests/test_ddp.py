"""DDP through torchrun: 2 CPU ranks with gloo train one fold; the OOF covers the whole fold."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from kit.competition import Competition
from kit.data.folds import make_folds

# 7 folds of 120 images: fold 1 has 17 validation images, an odd count that 2 ranks must pad
DDP = [*TINY, "folds.n_splits=7", "train.device=cpu"]


@pytest.mark.slow
def test_two_gloo_ranks_gather_the_whole_fold(digits):
    competition = Competition.load(digits.root, DDP)
    folds = make_folds(competition)
    command = [sys.executable, "-m", "kit", "train", "-C", str(digits.root), "--name", "ddp",
               "--folds", "1", "--nproc", "2", *[f"--set={o}" for o in DDP]]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    assert done.stdout.count("run ddp: CV accuracy") == 1  # one process reports

    run_dir = digits.root / "runs" / "ddp"
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    fold_ids = folds.loc[folds["fold"] == 1, "id"].astype(str)
    assert len(fold_ids) % 2 == 1
    assert list(oof.columns) == ["id", "fold"] + [f"p_{c}" for c in range(10)]
    assert oof["id"].tolist() == fold_ids.tolist()  # every image once: padding dropped, in order
    probs = oof.filter(like="p_").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the fold's score is the metric over all 17 gathered rows, not one rank's share
    targets = folds.set_index(folds["id"].astype(str)).loc[oof["id"], "target"].to_numpy()
    whole = float(np.mean(probs.argmax(axis=1) == targets))
    result = json.loads((run_dir / "fold1" / "result.json").read_text())
    assert result["score"] == pytest.approx(whole, abs=1e-12)
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "fold", "end"]  # rank 0 writes
    assert events[1]["accuracy"] == pytest.approx(whole, abs=1e-12)


@pytest.mark.slow
def test_a_ranks_error_reaches_the_launcher_as_one_line(digits):
    competition = Competition.load(digits.root, DDP)
    make_folds(competition)
    command = [sys.executable, "-m", "kit", "train", "-C", str(digits.root), "--name", "bad",
               "--folds", "9", "--nproc", "2", *[f"--set={o}" for o in DDP]]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    # the ranks' own error, read from their report files, not scraped from their output
    assert done.stderr.strip().splitlines() == [
        "Error: --folds [9] not in folds.csv (folds: [0, 1, 2, 3, 4, 5, 6])"
    ]
    assert not list((digits.root / "runs").glob(".ddp-*"))  # the job folder is cleaned up
