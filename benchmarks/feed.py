"""Does data feeding keep the model busy? Measured in one run on this machine.

    python benchmarks/feed.py [--model mobilenetv3_small_100] [--size 64] [--images 512] [--workers 1]

Builds a competition of JPEGs (digits drawn in colour, --size px) in a temp folder, then measures
with the same model, batch and optimiser step:

- model-only img/s: the training step on uint8 batches already in memory (no data work at all);
- end-to-end img/s: the training step fed by kit's DataLoader (decode, augment, collate), once
  without and once with the preprocessed cache (data.cache);
- loader-only img/s with and without the cache (the DataLoader alone, no model);
- augmentation order at 512 px: the same heavy ops before vs after the downscale.

The last line is `feed_ratio=<x>`: the best end-to-end img/s / model-only img/s (goal >= 0.90 on
2 CPU cores for a small model on 64-px JPEGs; >= 0.95 for resnet50 at 224 px on a GPU).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def build_competition(root: Path, n: int, size: int) -> None:
    """n colour JPEGs of handwritten digits at size px, with train.csv and kit.toml."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    (root / "data" / "train").mkdir(parents=True)
    ids, labels = [], []
    for i in range(n):
        k = i % len(digits.images)
        gray = (digits.images[k] * 16).clip(0, 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR), np.float32)
        colour = rng.uniform(0.3, 1.0, 3)
        rgb = (big[..., None] * colour + rng.normal(0, 8, (size, size, 3))).clip(0, 255)
        Image.fromarray(rgb.astype(np.uint8)).save(
            root / "data" / "train" / f"{i:05d}.jpg", quality=90
        )
        ids.append(f"{i:05d}")
        labels.append(int(digits.target[k]))
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "data" / "train.csv", index=False)
    (root / "kit.toml").write_text('[data]\nimage_ext = ".jpg"\n')


def train_step(model, optimizer, images, targets, device, mean, std):
    from kit.device import normalise, to_unit_float

    x = normalise(to_unit_float(images, device), mean, std)
    loss = torch.nn.functional.cross_entropy(model(x), targets.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def model_only(model, optimizer, batch: int, size: int, steps: int, device, mean, std) -> float:
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    targets = torch.randint(0, 10, (batch,))
    for _ in range(2):
        train_step(model, optimizer, images, targets, device, mean, std)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, images, targets, device, mean, std)
    _sync(device)
    return steps * batch / (time.perf_counter() - started)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_loader(competition, items, batch: int, workers: int, cache: bool, device):
    from torch.utils.data import DataLoader

    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.transforms import create_transform

    config = competition.config
    source = create_image_source(config, competition.root, items, cache=cache)
    transform = create_transform(config.augment.train, config.train.image_size, "augment.train")
    dataset = ImageDataset(items["path"], items["target"].to_numpy(), transform, source)
    return DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip


def end_to_end(model, optimizer, loader, device, mean, std, epochs: int = 2) -> float:
    """img/s of the last epoch (the first starts workers and fills the cache)."""
    for epoch in range(epochs):
        started, seen = time.perf_counter(), 0
        for images, targets in loader:
            train_step(model, optimizer, images, targets, device, mean, std)
            seen += len(images)
        _sync(device)
        if epoch == epochs - 1:
            return seen / (time.perf_counter() - started)
    raise AssertionError("unreachable")


def loader_only(loader, epochs: int = 2) -> float:
    for epoch in range(epochs):
        started, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += len(images)
        if epoch == epochs - 1:
            return seen / (time.perf_counter() - started)
    raise AssertionError("unreachable")


def augmentation_order(n: int = 40) -> float:
    """Heavy ops then downscale vs downscale then the same ops, on 512-px images: the speed-up."""
    from kit.data.transforms import import_albumentations

    A = import_albumentations()
    heavy = [A.CLAHE(p=1.0), A.Affine(rotate=(-10, 10), p=1.0), A.GaussianBlur(p=1.0)]
    slow = A.Compose([*heavy, A.RandomResizedCrop((128, 128), p=1.0)])
    fast = A.Compose([A.RandomResizedCrop((128, 128), p=1.0), *heavy])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(n)]
    timings = []
    for pipeline in (slow, fast):
        started = time.perf_counter()
        for image in images:
            pipeline(image=image)
        timings.append(time.perf_counter() - started)
    return timings[0] / timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="mobilenetv3_small_100", help="timm model (random weights)"
    )
    parser.add_argument("--size", type=int, default=64, help="px of the JPEGs and the input")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch threads; 0 = cores - workers, so the loader has its own core",
    )  # fmt: skip
    args = parser.parse_args()

    from kit.competition import Competition
    from kit.config import ModelSection
    from kit.data.layout import read_train_items
    from kit.device import pick_device
    from kit.train.model import create_model, input_stats

    device = pick_device(args.device)
    # oversubscribed intra-op threads stall each other; the loader's workers need cores too
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
    print(f"machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
          f"device {device}")  # fmt: skip
    print(f"model {args.model}, {args.size}-px JPEGs, batch {args.batch}, workers {args.workers}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "feed"
        build_competition(root, args.images, args.size)
        competition = Competition.load(root, [f"train.image_size={args.size}"])
        items = read_train_items(competition)
        model = create_model(ModelSection(name=args.model), 10).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        mean, std = input_stats(model)
        steps = max(4, args.images // args.batch)

        # the machine is shared, so model-only and end-to-end windows alternate, round by round,
        # and each round's ratio compares windows measured seconds apart
        loaders = {
            cache: make_loader(competition, items, args.batch, args.workers, cache, device)
            for cache in (False, True)
        }
        for cache, loader in loaders.items():  # start the workers, fill the cache
            fed = loader_only(loader)
            label = "with cache   " if cache else "without cache"
            print(f"loader-only {label} {fed:8.1f} img/s")
        ratios = {False: [], True: []}
        for round_ in range(args.rounds):
            compute = model_only(model, optimizer, args.batch, args.size, steps, device, mean, std)
            line = f"round {round_}: model-only {compute:7.1f} img/s"
            for cache, loader in loaders.items():
                fed = end_to_end(model, optimizer, loader, device, mean, std, epochs=1)
                ratios[cache].append(fed / compute)
                line += f", end-to-end {'cached' if cache else 'decoded'} {fed:7.1f} img/s"
            print(line)
        medians = {cache: float(np.median(values)) for cache, values in ratios.items()}
        print(f"end-to-end / model-only, median of {args.rounds} rounds: "
              f"without cache {medians[False]:.3f}, with cache {medians[True]:.3f}")  # fmt: skip
        del loaders
    print(f"augmentation order at 512 px: downscale first is {augmentation_order():.1f}x faster")
    print(f"feed_ratio={max(medians.values()):.3f}")


if __name__ == "__main__":
    main()
