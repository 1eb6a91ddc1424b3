"""Folds side by side: `--parallel 2` against a sequential run, and what a fold costs on Ray.

    python benchmarks/parallel.py [--images 1797] [--epochs 4] [--folds 5] [--no-ray]
                                  [--no-speedup] [--runs K]

1. speed-up, as a user gets it: `kit train` (train.threads = the cores) against
   `kit train --parallel 2` (two children, each pinned to half the cores, train.threads = half:
   threads split), each a fresh `python -m kit` process, so both pay the driver's imports and the
   parallel arm its children's start (forked from kit.warm's server, which imports while the
   driver does). Then the same two runs in one process whose warm server already runs (a
   notebook's or a sweep's second call). Also printed: thread_scaling, a fold's mean seconds at
   half the threads over its mean at all of them (from the folds' result.json), and the ceiling it
   sets: folds x T_all / (ceil(folds / 2) x T_half), the speed-up of perfect overlap with no
   start-up at all. Goal >= 1.6x on 2 cores for 5 small folds.
2. Ray overhead: a local Ray with 1 CPU (started in this process) trains the run's folds one
   after another as Ray tasks (train.threads = 1), against the same folds in-process at 1 thread;
   the extra seconds per fold are the scheduling overhead: the storage check, the worker's start
   and imports, shipping the config, re-reading the fold table. Goal <= 2 s. On a shared machine
   the folds' own training time moves by more than that overhead between two arms, so the figure
   compares the time *outside* the folds' training (wall seconds - the folds' own `seconds` in
   their result.json) of the two arms; the plain difference of wall times is printed too. Ray's
   own start-up (ray.init) is not counted: a cluster outlives many runs. The runner is made as
   `kit train --cluster` makes it (kit.cluster.create_runner), so the storage check and the
   workers' warm-up start while the driver creates the run. --runs K: K runs as one job set on
   Ray (`kit train --name a,b,c --cluster`) against the same K runs in-process, per fold of all.

Each figure's line ends with the load average (1 min) before and after its arms. The last line
is `speedup=<sequential seconds / parallel seconds>` of the `kit train` processes (with
--no-speedup, `ray_overhead_per_fold_seconds=...`).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def build(images: int, epochs: int, folds: int):
    from kit.data.download import download
    from kit.scaffold import new_competition

    root = Path(tempfile.mkdtemp(prefix="kit-parallel-"))
    os.environ.setdefault("KIT_HOME", str(root / "home"))
    competition = new_competition("digits", root, example="digits")
    download(competition, limit=images if images < 1797 else None)
    return competition.root, [f"train.epochs={epochs}", f"folds.n_splits={folds}",
                              "train.device=cpu"]  # fmt: skip


def timed_run(root: Path, overrides: list[str], name: str, runner=None) -> float:
    """Seconds of train_run, including the runner's start (its children's imports) and end.
    name "a,b,c": those runs as one job set on the runner (kit.train.jobset), or one after
    another without one."""
    import contextlib

    from kit.competition import Competition
    from kit.train.cv import train_run
    from kit.train.jobset import train_runs

    competition = Competition.load(root, overrides)
    started = time.perf_counter()
    with runner(competition) if runner else contextlib.nullcontext() as scheduler:
        if "," in name:
            train_runs(competition, name.split(","), progress=False, runner=scheduler)
        else:
            train_run(competition, name, progress=False, runner=scheduler)
    return time.perf_counter() - started


def timed_cli(root: Path, overrides: list[str], name: str, *options: str) -> float:
    """Seconds of `python -m kit train` in a new process, as a user runs it."""
    sets = [part for override in overrides for part in ("--set", override)]
    command = [sys.executable, "-m", "kit", "train", "-C", str(root), "--name", name, "--quiet"]
    started = time.perf_counter()
    subprocess.run([*command, *options, *sets], check=True, capture_output=True)
    return time.perf_counter() - started


def fold_times(root: Path, run: str) -> list[float]:
    """The run's folds' own training seconds (each fold's result.json)."""
    import json

    from kit.run import FOLD_PREFIX, RESULT_NAME

    return [
        json.loads(path.read_text())["seconds"]
        for path in (root / "runs" / run).glob(f"{FOLD_PREFIX}*/{RESULT_NAME}")
    ]


def fold_seconds(root: Path, run: str) -> float:
    """The run's folds' own training seconds, summed."""
    return sum(fold_times(root, run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1797)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray overhead figure.")
    parser.add_argument("--no-speedup", action="store_true", help="Skip the --parallel figure.")
    parser.add_argument("--runs", type=int, default=1, help="Ray arm: K runs as one job set.")
    args = parser.parse_args()

    from kit.cluster import WARM_MODULES, create_runner, local_ray_auth, short_temp_dir
    from kit.competition import Competition
    from kit.data.folds import make_folds
    from kit.device import usable_cores
    from kit.warm import start_warm_server

    for module in WARM_MODULES:  # the driver's imports are not what is measured
        __import__(module)
    root, base = build(args.images, args.epochs, args.folds)
    make_folds(Competition.load(root, base))
    cores = usable_cores()
    print(f"cores={cores} folds={args.folds} epochs={args.epochs} images={args.images}")

    if not args.no_ray:  # first, while the machine is as fresh as it will be for the others
        import ray

        load = os.getloadavg()[0]
        one = [*base, "train.threads=1"]
        local_ray_auth()
        ray.init(num_cpus=1, include_dashboard=False, _temp_dir=short_temp_dir(),
                 log_to_driver=False, configure_logging=False)  # fmt: skip
        on_ray_runs = [f"ray{k}" for k in range(1, args.runs + 1)]
        in_process_runs = [f"seq{k}" for k in range(1, args.runs + 1)]
        try:
            on_ray = timed_run(root, one, ",".join(on_ray_runs),
                               lambda c: create_runner(c, cluster="auto"))  # fmt: skip
        finally:
            ray.shutdown()
        in_process = timed_run(root, one, ",".join(in_process_runs))
        outside = {
            "ray": on_ray - sum(fold_seconds(root, run) for run in on_ray_runs),
            "seq": in_process - sum(fold_seconds(root, run) for run in in_process_runs),
        }
        jobs = args.folds * args.runs
        per_fold = (outside["ray"] - outside["seq"]) / jobs
        print(f"ray_1cpu_seconds={on_ray:.1f} in_process_1thread_seconds={in_process:.1f} "
              f"outside_training_seconds={outside['ray']:.1f} vs {outside['seq']:.1f} "
              f"runs={args.runs} "
              f"load={load:.2f}->{os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"wall_difference_per_fold_seconds={(on_ray - in_process) / jobs:.2f}")
        print(f"ray_overhead_per_fold_seconds={per_fold:.2f}")
    if args.no_speedup:
        return

    # threads fixed, not load-aware: the sequential run takes every core, each of 2 children half
    whole, half = [*base, f"train.threads={cores}"], [*base, f"train.threads={max(1, cores // 2)}"]
    load = os.getloadavg()[0]
    sequential = timed_cli(root, whole, "seq")
    parallel = timed_cli(root, half, "par2", "--parallel", "2")
    print(f"cli_sequential_seconds={sequential:.1f} cli_parallel2_seconds={parallel:.1f} "
          f"load={load:.2f}->{os.getloadavg()[0]:.2f}")  # fmt: skip
    load = os.getloadavg()[0]
    start_warm_server()  # as a second --parallel call of this process finds it
    warm_up = timed_run(root, half, "warm0", lambda c: create_runner(c, parallel="2"))
    warm_sequential = timed_run(root, whole, "seq-warm")
    warm_parallel = timed_run(root, half, "par2-warm", lambda c: create_runner(c, parallel="2"))
    print(f"in_process_sequential_seconds={warm_sequential:.1f} "
          f"in_process_parallel2_warm_seconds={warm_parallel:.1f} (first call {warm_up:.1f}) "
          f"speedup_warm={warm_sequential / warm_parallel:.2f} "
          f"load={load:.2f}->{os.getloadavg()[0]:.2f}")  # fmt: skip
    all_threads = fold_times(root, "seq") + fold_times(root, "seq-warm")
    half_threads = fold_times(root, "par2") + fold_times(root, "par2-warm")
    scaling = (sum(half_threads) / len(half_threads)) / (sum(all_threads) / len(all_threads))
    rounds = math.ceil(args.folds / 2)
    print(f"thread_scaling={scaling:.2f} ceiling={args.folds / (rounds * scaling):.2f}")
    print(f"speedup={sequential / parallel:.2f}")


if __name__ == "__main__":
    main()
