"""What packaging a run as an offline kernel costs, measured in one run on this machine.

Builds the digits example (--limit images), trains a quick run, predicts it, then times:
  build      kit kernel build (wheel, weights, metadata, secret scan)
  in-process predict_run + ensemble_runs, as `kit predict` + `kit ensemble` run them
  run-local  the kernel as Kaggle would run it: new interpreter, pip install of the wheel,
             unshare -n, OOF + test prediction, submission, comparison
and prints the sizes and the ratio run-local / in-process.

    python benchmarks/kernel.py [--limit 300] [--folds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--folds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kit-kernel-bench-"))
    os.environ["KIT_HOME"] = str(work / "kit-home")
    os.environ.setdefault("KAGGLE_USERNAME", "bench-user")

    from kit.competition import Competition
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.infer.ensemble import ensemble_runs
    from kit.infer.predict import predict_run
    from kit.kernel import build_kernel, run_local
    from kit.scaffold import new_competition
    from kit.train.cv import train_run

    competition = new_competition("digits", work, example="digits")
    download(competition, limit=args.limit)
    recipe = [
        "train.epochs=1",
        f"folds.n_splits={args.folds}",
        "predict.tta=['identity','shift:1,0']",
    ]
    competition = Competition.load(competition.root, recipe)
    make_folds(competition)
    train_run(competition, "r1", progress=False)

    started = time.perf_counter()
    predict_run(competition, "r1", progress=False)
    ensemble_runs(competition, ["r1"], "r1")
    in_process = time.perf_counter() - started

    started = time.perf_counter()
    built = build_kernel(competition, "r1")
    build = time.perf_counter() - started
    dataset = Path(built["kernel_dir"]) / "dataset"
    sizes = {p.name: p.stat().st_size for p in dataset.iterdir()}
    wheel = next(
        size for name, size in sizes.items() if name.startswith("kit-") and name.endswith(".whl")
    )

    started = time.perf_counter()
    result = run_local(competition, "r1")
    local = time.perf_counter() - started

    print(f"images {args.limit}, folds {args.folds}, cores {os.cpu_count()}")
    print(f"build           {build:7.2f} s  (dataset {sum(sizes.values()) / 1e6:.2f} MB, "
          f"kit wheel {wheel / 1e3:.0f} kB)")  # fmt: skip
    print(f"in-process      {in_process:7.2f} s  (predict_run + ensemble_runs)")
    print(f"run-local       {local:7.2f} s  (isolated: {result['isolated']}, "
          f"matches: {result['matches']})")  # fmt: skip
    print(f"ratio run-local / in-process: {local / in_process:.2f}")


if __name__ == "__main__":
    main()
