"""`kit ensemble` at scale: 5 runs of 1,000,000 test rows x 10 classes, one run of this script.

    python benchmarks/ensemble_scale.py [--rows 1000000] [--runs 5] [--train-images 50000]
        [--format probabilities] [--root DIR]

Builds a competition folder whose sample_submission has --rows ids, a training set of
--train-images real 8-px PNGs (so the training table is realistic and a blend that touched
every image would show), and --runs run folders with OOF tables and test.csv of --rows x 10
probabilities. The submission format defaults to "probabilities" (a column per class: the
costliest to write and validate; class_index is the cheap case). Then it times ensemble_runs: read
every test.csv, check its ids against sample_submission, blend (mean), write the submission in
the competition's format and validate it. Setup is not timed. It measures
a fifth of the rows too and prints how linear the time is (1.0 = exactly linear), and the CPU
seconds of the large call (which, unlike wall time, other processes on the machine do not inflate).
The last line is `seconds=<x>`, wall time for --rows (goal <= 10 s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def build(root: Path, rows: int, runs: int, train_images: int, fmt: str):
    import json

    import numpy as np
    import pandas as pd
    from PIL import Image

    from kit.competition import Competition
    from kit.config import dump_toml
    from kit.data.folds import folds_hash, make_folds, training_table
    from kit.scaffold import new_competition

    shutil.rmtree(root, ignore_errors=True)
    competition = new_competition("scale", root.parent, example=None)
    data = competition.root / "data"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    rng = np.random.default_rng(0)
    n = train_images
    train = pd.DataFrame({"id": [f"t{i:06d}" for i in range(n)], "label": np.arange(n) % 10})
    for k, i in enumerate(train["id"]):
        Image.fromarray(np.full((8, 8), k % 251, dtype=np.uint8)).save(data / "train" / f"{i}.png")
    train.to_csv(data / "train.csv", index=False)
    ids = pd.Series([f"img{i:07d}" for i in range(rows)])
    if fmt == "probabilities":
        sample = pd.DataFrame({"id": ids, **{str(c): 0.1 for c in range(10)}})
    else:
        sample = pd.DataFrame({"id": ids, "label": 0})
    sample.to_csv(data / "sample_submission.csv", index=False)
    toml = competition.root / "kit.toml"
    toml.write_text(toml.read_text().replace('format = "class_index"', f'format = "{fmt}"'))
    competition = Competition.load(competition.root)
    assert competition.config.submission.format == fmt
    make_folds(competition)
    table, _ = training_table(competition)
    columns = [f"p_{c}" for c in range(10)]
    for r in range(runs):
        run_dir = competition.runs_dir / f"r{r}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.toml").write_text(dump_toml(competition.config.to_dict()))
        info = {"run": f"r{r}", "classes": list(range(10)), "folds_hash": folds_hash(table)}
        (run_dir / "run.json").write_text(json.dumps(info))
        oof = pd.DataFrame(rng.dirichlet(np.ones(10), len(table)), columns=columns)
        pd.concat([table[["id", "fold"]], oof], axis=1).to_csv(run_dir / "oof.csv", index=False)
        test = pd.DataFrame(rng.dirichlet(np.ones(10), rows).astype(np.float32), columns=columns)
        test.insert(0, "id", ids)
        test.to_csv(run_dir / "test.csv", index=False, float_format="%.6g")
    return competition


def timed(competition, runs: int) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of one ensemble_runs call."""
    from kit.infer.ensemble import ensemble_runs

    started, cpu = time.perf_counter(), time.process_time()
    ensemble_runs(competition, [f"r{r}" for r in range(runs)], "scale")
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=50_000)
    parser.add_argument("--format", default="probabilities",
                        choices=["probabilities", "class_index", "class_name"])  # fmt: skip
    parser.add_argument("--root", type=Path, help="work folder (default: a temp folder)")
    args = parser.parse_args()
    work = args.root or Path(tempfile.mkdtemp(prefix="kit-ensemble-"))
    os.environ["KIT_HOME"] = str(work / "home")

    small_rows = args.rows // 5
    small = build(work / "small" / "scale", small_rows, args.runs, args.train_images, args.format)
    small_seconds, _ = timed(small, args.runs)
    shutil.rmtree(work / "small")
    large = build(work / "large" / "scale", args.rows, args.runs, args.train_images, args.format)
    seconds, cpu_seconds = timed(large, args.runs)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())  # other processes share the cores
    print(f"cpus={os.cpu_count()} runs={args.runs} classes=10 format={args.format} "
          f"train_images={args.train_images} load_average={load}")  # fmt: skip
    print(f"cpu_seconds={cpu_seconds:.2f}")
    print(f"seconds_at_{small_rows}_rows={small_seconds:.2f}")
    print(f"linearity={seconds / (small_seconds * args.rows / small_rows):.2f}")
    if args.root is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"seconds={seconds:.2f}")


if __name__ == "__main__":
    main()
