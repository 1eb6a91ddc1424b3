"""img/s per core of kit's training loader for 512-px JPEGs trained at 224 px, default train aug.

    python benchmarks/loader.py [--images 400] [--source 512] [--size 224] [--rounds 3] [--two-pass]

Writes --images photo-like JPEGs (smooth shading, edges, grain; quality 90) of --source px to a
temp folder, then runs kit's own path: kit.data.cache.create_image_source (as training builds it,
so a JPEG at least twice the target is decoded at reduced size) -> ImageDataset -> the default
augment.train of kit.toml (Resize to --size, then Affine) -> DataLoader collate, in this process
(num_workers 0, torch and OpenCV at one thread), so the figure is per core. Time is CPU time of
the process (os.times), which other processes on a shared machine do not inflate; the wall
figure is printed beside it. The same loader with the reduced decode turned off is timed in
alternation (the old path), and with --two-pass the Resize and Affine as two passes too (kit
runs them as one warp: kit.data.fused). The last line is `img_per_s_per_core=<x>` (goal >= 700;
it was 412).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def photo(path: Path, size: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6, 3)
    image = np.stack(
        [128 + 90 * np.sin((5 + c) * x + p) * np.cos(4 * y - p) for c, p in enumerate(phase)], -1
    )
    top, left = rng.integers(0, size // 2, 2)
    image[top : top + size // 4, left : left + size // 3] += 60
    image += rng.normal(0, 6, image.shape)
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def one_pass(loader) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, images) of one pass over the loader."""
    started, cpu = time.perf_counter(), os.times()
    seen = 0
    for images, _ in loader:
        seen += len(images)
    after = os.times()
    return (
        (after.user - cpu.user) + (after.system - cpu.system),
        time.perf_counter() - started,
        seen,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--source", type=int, default=512, help="px of the JPEGs")
    parser.add_argument("--size", type=int, default=224, help="px of the network input")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--two-pass", action="store_true",
                        help="also time Resize + Affine as two passes")  # fmt: skip
    args = parser.parse_args()

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from kit.config import Config
    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.transforms import create_transform
    from kit.device import set_threads

    set_threads(1)  # one core: torch and OpenCV
    config = Config()
    config.train.image_size = args.size
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.images):
            paths.append(str(Path(folder) / f"{i:05d}.jpg"))
            photo(Path(paths[-1]), args.source, i)
        transform = create_transform(config.augment.train, args.size, "augment.train")
        reduced = create_image_source(config, augment=config.augment.train)
        full = create_image_source(config, augment=config.augment.train)
        full.decode_size = 0  # the old path: decode every pixel, then resize
        arms = [("kit", reduced, transform), ("full decode", full, transform)]
        if args.two_pass:  # what create_transform built before kit.data.fused
            import albumentations as A

            from kit.data.transforms import build_steps

            steps = build_steps(config.augment.train, "augment.train")
            two = A.Compose([A.Resize(args.size, args.size), *steps])
            arms.append(("two passes", reduced, two))
        loaders = {}
        for name, source, pipeline in arms:
            dataset = ImageDataset(paths, np.zeros(len(paths), np.int64), pipeline, source)
            loaders[name] = DataLoader(dataset, batch_size=args.batch, num_workers=0)
        for loader in loaders.values():
            one_pass(loader)  # warm the page cache and the code paths
        totals = {name: [0.0, 0.0, 0] for name in loaders}
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            for name, loader in loaders.items():
                cpu, wall, seen = one_pass(loader)
                totals[name][0] += cpu
                totals[name][1] += wall
                totals[name][2] += seen
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"cpus={os.cpu_count()} load_average={load} torch_threads={torch.get_num_threads()} "
          f"jpeg={args.source}px input={args.size}px "
          f"aug={[s['name'] for s in config.augment.train]}")  # fmt: skip
    for name, (cpu, wall, seen) in totals.items():
        print(f"{name:>12}: {seen / cpu:7.1f} img/s per CPU-second, {seen / wall:7.1f} img/s wall")
    kit_cpu, _, kit_seen = totals["kit"]
    full_cpu, _, full_seen = totals["full decode"]
    print(f"speed-up over the full decode: {(kit_seen / kit_cpu) / (full_seen / full_cpu):.2f}x")
    if "two passes" in totals:
        two_cpu, _, two_seen = totals["two passes"]
        print(f"speed-up over two passes: {(kit_seen / kit_cpu) / (two_seen / two_cpu):.2f}x")
    print(f"img_per_s_per_core={kit_seen / kit_cpu:.1f}")


if __name__ == "__main__":
    main()
