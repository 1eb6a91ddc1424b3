"""kit's training overhead: one fold through kit's loop vs a bare hand-written PyTorch loop.

    python benchmarks/overhead.py [--epochs 3] [--images 1797] [--repeats 2] [--device cpu]
    python benchmarks/overhead.py --device cuda --amp-speedup    # on a GPU: AMP + channels_last

Both loops train the same timm model on the same fold of the bundled digits competition with the
same decoded images, transforms, batch size, epochs, AdamW and warm-up + cosine schedule, and both
score the validation fold after every epoch. kit adds what the bare loop lacks: seeded resumable
sampling, last.pt/best.pt checkpoints, the log, the metric object. Each loop runs `--repeats`
times, alternating, and the fastest run of each counts (the machine is shared). The last line is
`overhead_ratio=<kit seconds / bare seconds>`; the goal is <= 1.05.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def build(images: int, epochs: int, device: str, extra: list[str]):
    from kit.competition import Competition
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.scaffold import new_competition

    root = Path(tempfile.mkdtemp(prefix="kit-overhead-"))
    os.environ.setdefault("KIT_HOME", str(root / "home"))
    competition = new_competition("digits", root, example="digits")
    download(competition, limit=images if images < 1797 else None)
    overrides = [f"train.epochs={epochs}", f"train.device={device}", *extra]
    competition = Competition.load(competition.root, overrides)
    make_folds(competition)
    return competition


def kit_fold(competition, out: Path) -> float:
    import torch

    from kit.data.folds import training_table
    from kit.train.loop import train_fold

    table, task = training_table(competition)
    valid = table["fold"] == 0
    device = torch.device(competition.config.train.device)
    started, cpu = time.perf_counter(), time.process_time()
    train_fold(
        competition.config, 0, table[~valid].reset_index(drop=True),
        table[valid].reset_index(drop=True), task, out, device, root=competition.root,
        log_path=out / "log.jsonl", progress=False,
    )  # fmt: skip
    return time.perf_counter() - started, time.process_time() - cpu


def bare_fold(competition) -> float:
    """What one would write by hand: no resume, no checkpoints, no log."""
    import timm
    import torch
    from torch.utils.data import DataLoader

    from kit.data.dataset import ImageDataset
    from kit.data.folds import training_table
    from kit.data.transforms import create_transform

    config, t = competition.config, competition.config.train
    table, task = training_table(competition)
    valid = table["fold"] == 0
    train_items, valid_items = table[~valid], table[valid]
    device = torch.device(t.device)
    started, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(t.seed)
    train_set = ImageDataset(
        train_items["path"], task.encode(train_items["target"]),
        create_transform(config.augment.train, t.image_size, "augment.train"),
    )  # fmt: skip
    valid_set = ImageDataset(
        valid_items["path"], task.encode(valid_items["target"]),
        create_transform(config.augment.valid, t.image_size, "augment.valid"),
    )  # fmt: skip
    train_loader = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, drop_last=True)
    valid_loader = DataLoader(valid_set, batch_size=t.batch_size * 2)
    model = timm.create_model(config.model.name, num_classes=task.num_outputs).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    total, warmup = t.epochs * len(train_loader), max(1, round(t.warmup_epochs * len(train_loader)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))
        ),
    )
    for _ in range(t.epochs):
        model.train()
        for images, targets in train_loader:
            x = (images.to(device).float() / 255 - mean) / std
            loss = torch.nn.functional.cross_entropy(
                model(x), targets.to(device), label_smoothing=t.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, targets in valid_loader:
                x = (images.to(device).float() / 255 - mean) / std
                correct += (model(x).argmax(1).cpu() == targets).sum().item()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=1797)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp-speedup", action="store_true", help="GPU: AMP+channels_last vs fp32")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU(s), device {args.device}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    if args.amp_speedup:
        fast = build(args.images, args.epochs, args.device, ["train.amp=true"])
        slow = build(args.images, args.epochs, args.device,
                     ["train.amp=false", "train.channels_last=false"])  # fmt: skip
        times = {"amp": [], "fp32": []}
        for i in range(args.repeats + 1):  # the first pair warms up cuDNN
            times["fp32"].append(kit_fold(slow, Path(tempfile.mkdtemp()) / f"f{i}")[0])
            times["amp"].append(kit_fold(fast, Path(tempfile.mkdtemp()) / f"a{i}")[0])
        fp32, amp = min(times["fp32"][1:]), min(times["amp"][1:])
        print(f"fp32 {fp32:.2f}s  amp+channels_last {amp:.2f}s")
        print(f"amp_channels_last_speedup={fp32 / amp:.3f}")
        return
    competition = build(args.images, args.epochs, args.device, [])
    bare_fold(competition)  # warm-up: imports, allocator, page cache
    kit_times, bare_times = [], []
    for i in range(args.repeats):
        bare_times.append(bare_fold(competition))
        kit_times.append(kit_fold(competition, competition.runs_dir / f"bench{i}" / "fold0"))
        print(f"repeat {i + 1}: bare {bare_times[-1][0]:.2f}s (cpu {bare_times[-1][1]:.2f}s)  "
              f"kit {kit_times[-1][0]:.2f}s (cpu {kit_times[-1][1]:.2f}s)")  # fmt: skip
    kit_s, bare_s = min(w for w, _ in kit_times), min(w for w, _ in bare_times)
    kit_cpu, bare_cpu = min(c for _, c in kit_times), min(c for _, c in bare_times)
    print(
        f"one fold, {args.epochs} epochs, {args.images} images: bare {bare_s:.2f}s, "
        f"kit {kit_s:.2f}s; process CPU time: bare {bare_cpu:.2f}s, kit {kit_cpu:.2f}s"
    )
    print(f"cpu_time_ratio={kit_cpu / bare_cpu:.3f}")
    print(f"overhead_ratio={kit_s / bare_s:.3f}")


if __name__ == "__main__":
    main()
