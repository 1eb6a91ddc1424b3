"""On digits: TTA views chosen on OOF, and the fold ensemble + TTA against the best single fold.

    python benchmarks/fold_ensemble.py [--epochs 5] [--root DIR]

Runs the real CLI on a fresh copy of competitions/digits (all 1,797 images): download, folds,
train. Then `kit predict --tta identity` gives each fold model's test predictions alone
(test_folds.csv), and `kit predict --tta auto,...` chooses views on OOF among the default views
plus hflip. Both are scored against the hidden answer key (the whole test set, public and
private). Prints the OOF score of identity and of the chosen views, each fold's test accuracy,
and, last, `fold_gain=<fold ensemble + TTA minus the best single fold>` (goal >= 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = "auto,identity,shift:1,0,shift:-1,0,shift:0,1,shift:0,-1,hflip"


def kit(*args: str, env: dict) -> str:
    command = [sys.executable, "-m", "kit", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--root", type=Path, help="work folder (default: a temp folder)")
    args = parser.parse_args()

    import pandas as pd

    work = args.root or Path(tempfile.mkdtemp(prefix="kit-folds-"))
    env = {**os.environ, "KIT_HOME": str(work / "home"), "NO_ALBUMENTATIONS_UPDATE": "1"}
    root = work / "digits"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "competitions" / "digits", root)
    c = ["-C", str(root)]
    kit("download", *c, env=env)
    kit("folds", *c, env=env)
    kit("train", *c, "--name", "r", "--quiet", "--set", f"train.epochs={args.epochs}", env=env)

    with sqlite3.connect(work / "home" / "leaderboard.sqlite") as db:
        answers = pd.read_sql_query("SELECT id, target FROM answers", db).set_index("id")
    run = root / "runs" / "r"

    def accuracy(table: pd.DataFrame) -> float:
        labels = table.filter(like="p_").to_numpy().argmax(1)
        truth = answers.loc[table["id"], "target"].astype(int).to_numpy()
        return float((labels == truth).mean())

    kit("predict", *c, "r", "--tta", "identity", "--quiet", env=env)
    by_fold = pd.read_csv(run / "test_folds.csv", dtype={"id": str})
    singles = {int(f): accuracy(t) for f, t in by_fold.groupby("fold")}
    out = kit("predict", *c, "r", "--tta", CANDIDATES, "--quiet", env=env)
    ensemble = accuracy(pd.read_csv(run / "test.csv", dtype={"id": str}))
    print(out.strip())
    for fold, score in singles.items():
        print(f"fold{fold}_test_accuracy={score:.4f}")
    print(f"best_single_fold={max(singles.values()):.4f}")
    print(f"fold_ensemble_tta={ensemble:.4f}")
    print(f"fold_gain={ensemble - max(singles.values()):.4f}")


if __name__ == "__main__":
    main()
