"""Does kit's data feeding keep the model busy? kit's own training path, measured in one run.

    python benchmarks/feed.py [--model resnet18] [--images 2000] [--source 256] [--size 128]
        [--batch 32] [--rounds 1] [--cores N] [--device auto]

Writes --images photo-like JPEGs of --source px (10 classes) and trains one epoch of
kit.train.loop.train_fold on them at --size px with a real timm architecture (random init), in
two arms that differ only in the data work:

- end-to-end: kit as a user runs it: decode (reduced where it applies), the default augment.train,
  collate, with kit's machine-fitting defaults (num_workers "auto", threads from the cores);
- model-only: the same train_fold, same model, batch, steps, validation and checkpoints, but fed
  from a cache of raw pixels already at --size (filled before timing) with no augmentation: the
  fastest feed kit's loop can have, so the rest is the model's own time.

Both arms get the same CPU budget (the same cores: --cores pins the process to that many, and
kit's defaults split them the same way the user would get). The arms alternate --rounds times so
both see the same machine load. Printed: wall seconds, CPU seconds (process + reaped loader
workers, which load from other processes does not inflate as much), and the ratios model-only /
end-to-end of each. The last line is `feed_ratio=<wall ratio>` (goal >= 0.95 on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from loader import photo  # noqa: E402  the same photo-like JPEGs as benchmarks/loader.py


def build(root: Path, n: int, source: int):
    import pandas as pd

    (root / "data" / "train").mkdir(parents=True)
    rows = []
    for i in range(n):
        path = root / "data" / "train" / f"{i:05d}.jpg"
        photo(path, source, i)
        rows.append({"id": f"{i:05d}", "path": str(path), "target": i % 10})
    return pd.DataFrame(rows)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def arm(config, items, valid, task, out_dir: Path, device, root: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one train_fold epoch."""
    from kit.train.loop import train_fold

    started, cpu = time.perf_counter(), cpu_seconds()
    train_fold(config, 0, items, valid, task, out_dir, device, root=root, progress=False)
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="timm model (random weights)")
    parser.add_argument("--images", type=int, default=2000, help="training JPEGs (>= 2000)")
    parser.add_argument("--valid", type=int, default=64, help="validation images (both arms)")
    parser.add_argument("--source", type=int, default=256, help="px of the JPEGs")
    parser.add_argument("--size", type=int, default=128, help="px of the network input")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both arms")
    parser.add_argument("--cores", type=int, default=0, help="pin to this many cores; 0 = all")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--workers", default="auto", help="train.num_workers of end-to-end")
    args = parser.parse_args()

    import torch

    from kit.config import Config
    from kit.data.bench import resolve_workers
    from kit.data.cache import create_image_source
    from kit.device import intra_op_threads, pick_device, usable_cores
    from kit.task import Task

    if args.cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    device = pick_device(args.device)
    task = Task("multiclass", tuple(range(10)))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["KIT_HOME"] = str(root / "home")  # no measurement: kit's unmeasured defaults
        table = build(root, args.images + args.valid, args.source)
        items, valid = table.iloc[: args.images], table.iloc[args.images :]
        items, valid = items.reset_index(drop=True), valid.reset_index(drop=True)

        def config_for(feed: str) -> Config:
            config = Config()
            config.model.name = args.model
            t = config.train
            t.image_size, t.batch_size, t.epochs, t.device = args.size, args.batch, 1, args.device
            t.amp, t.lr, t.warmup_epochs = args.amp, 1e-3, 0.0
            if feed == "model-only":
                config.data.cache, config.data.cache_size = True, args.size
                config.augment.train = []
            if feed == "model-only" and device.type == "cpu":
                t.num_workers = 0  # nothing to decode: the training process reads raw pixels
            else:  # an accelerator: the same workers in both arms (they also collate and pin)
                t.num_workers = args.workers if args.workers == "auto" else int(args.workers)
            return config

        configs = {feed: config_for(feed) for feed in ("end-to-end", "model-only")}
        warm = create_image_source(configs["model-only"], root, table)
        for path in table["path"]:  # fill the raw cache before timing (it is the fast feed)
            warm(path)
        for feed, config in configs.items():
            workers, why = resolve_workers(config, root, device)
            threads = intra_op_threads(workers, 1, config.train.threads)
            print(f"{feed:>11}: num_workers {workers} ({why}), torch threads {threads}")
        few = items.iloc[: 2 * args.batch]
        for feed, config in configs.items():  # imports, first allocations: paid once, untimed
            arm(config, few, valid, task, root / f"warm-{feed}", device, root)
        times = {feed: [] for feed in configs}
        for round_ in range(args.rounds):
            for feed, config in configs.items():
                wall, cpu = arm(config, items, valid, task, root / f"{feed}{round_}", device, root)
                times[feed].append((wall, cpu))
                print(f"round {round_} {feed:>11}: {wall:7.1f} s wall, {cpu:7.1f} s CPU, "
                      f"{args.images / wall:6.1f} img/s")  # fmt: skip
    wall_ratios = [
        m[0] / e[0] for m, e in zip(times["model-only"], times["end-to-end"], strict=True)
    ]
    cpu_ratios = [
        m[1] / e[1] for m, e in zip(times["model-only"], times["end-to-end"], strict=True)
    ]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {usable_cores()} usable cores, load average {load}, device {device}, "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"model {args.model}, {args.images} JPEGs {args.source} px -> {args.size} px, "
          f"batch {args.batch}, amp {args.amp}")  # fmt: skip
    print(f"cpu_time_ratio={statistics.median(cpu_ratios):.3f}")
    print(f"feed_ratio={statistics.median(wall_ratios):.3f}")


if __name__ == "__main__":
    main()
