"""`kit bench data`: how fast the competition's real input pipeline feeds images.

It times each stage on the training images (decode, the fixed preprocessing, augmentation,
collate), then the DataLoader at several num_workers x batch sizes, the way training runs it
(pin_memory and persistent workers on CUDA; there each uint8 batch also goes to the device and is
normalised there). The recommendation is the fewest workers within 5 % of the fastest loader,
since every extra worker costs memory and a core the model may want.
"""

from __future__ import annotations

import re
import time

import numpy as np

from kit.competition import Competition
from kit.errors import ConfigError
from kit.fileio import write_text

GOOD_ENOUGH = 0.95  # a setting within 5 % of the fastest counts as fast


def bench_data(
    competition: Competition,
    *,
    workers: list[int] | None = None,
    batch_sizes: list[int] | None = None,
    batches: int = 8,
    write: bool = False,
) -> dict:
    """Stage times (ms per image) and loader img/s per (num_workers, batch_size); a recommendation."""
    import torch
    from torch.utils.data import DataLoader, default_collate

    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.images import load_rgb
    from kit.data.layout import read_train_items
    from kit.data.transforms import create_transform
    from kit.device import normalise, pick_device, to_unit_float

    config = competition.config
    workers = workers if workers is not None else [0, 1, 2, 4]
    batch_sizes = batch_sizes or sorted(
        {max(1, config.train.batch_size // 2), config.train.batch_size}
    )
    if batches < 1 or min(batch_sizes) < 1 or min(workers) < 0:
        raise ConfigError("bench data: batches and batch sizes must be >= 1, workers >= 0")
    items = read_train_items(competition)
    needed = max(batch_sizes) * (batches + 1)
    paths = (items["path"].tolist() * (needed // max(len(items), 1) + 1))[:needed]
    source = create_image_source(config, competition.root, items)
    transform = create_transform(config.augment.train, config.train.image_size, "augment.train")
    device = pick_device(config.train.device)

    sample = paths[: min(64, len(paths))]
    stages = {}
    started = time.perf_counter()
    decoded = [load_rgb(p) for p in sample]
    stages["decode"] = _per_image(started, len(sample))
    started = time.perf_counter()
    prepared = [source(p) for p in sample]  # crop, preprocess, cache (filled by the first call)
    stages["source (first)"] = _per_image(started, len(sample))
    if source.cache_dir is not None:
        started = time.perf_counter()
        prepared = [source(p) for p in sample]
        stages["source (cached)"] = _per_image(started, len(sample))
    del decoded
    started = time.perf_counter()
    tensors = [
        torch.from_numpy(np.ascontiguousarray(transform(image=a)["image"].transpose(2, 0, 1)))
        for a in prepared
    ]
    stages["augment"] = _per_image(started, len(sample))
    started = time.perf_counter()
    for _ in range(10):
        default_collate([(t, 0) for t in tensors])
    stages["collate"] = _per_image(started, 10 * len(tensors))

    cuda = device.type == "cuda"
    dataset = ImageDataset(paths, np.zeros(len(paths), dtype=np.int64), transform, source)
    rows = []
    for batch_size in batch_sizes:
        for n in workers:
            loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=n, pin_memory=cuda,
                persistent_workers=n > 0, drop_last=True,
            )  # fmt: skip
            iterator = iter(loader)
            next(iterator)  # worker start-up is paid once per run, not per batch
            started, seen = time.perf_counter(), 0
            for images, _ in iterator:
                if cuda:  # as training does: uint8 to the device, normalised there
                    normalise(to_unit_float(images, device), (0.5,) * 3, (0.5,) * 3)
                seen += len(images)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            rows.append({"num_workers": n, "batch_size": batch_size,
                         "img_per_s": round(seen / seconds, 1)})  # fmt: skip
            del iterator, loader
    recommended = recommend(rows, config.train.batch_size)
    result = {"device": str(device), "images": len(items), "stages_ms": stages, "loader": rows,
              "recommended": recommended, "written": None}  # fmt: skip
    if write:
        result["written"] = set_toml_value(
            competition.root / "kit.toml", "train", "num_workers", recommended["num_workers"]
        )
    return result


def _per_image(started: float, n: int) -> float:
    return round((time.perf_counter() - started) * 1000 / max(n, 1), 3)


def recommend(rows: list[dict], batch_size: int) -> dict:
    """The fewest workers within GOOD_ENOUGH of the fastest, at the configured batch size if timed.

    Batch size is a recipe choice (it changes the optimisation), so it is reported, not changed.
    """
    same = [r for r in rows if r["batch_size"] == batch_size] or rows
    best = max(r["img_per_s"] for r in same)
    fast = [r for r in same if r["img_per_s"] >= GOOD_ENOUGH * best]
    choice = min(fast, key=lambda r: (r["num_workers"], -r["img_per_s"]))
    return {"num_workers": choice["num_workers"], "batch_size": choice["batch_size"],
            "img_per_s": choice["img_per_s"]}  # fmt: skip


def set_toml_value(path, section: str, key: str, value) -> str:
    """Rewrite `key = value` inside [section] of a kit.toml, keeping its comment; the new line."""
    text = path.read_text()
    header = re.search(rf"^\[{re.escape(section)}\]\s*$", text, re.M)
    if header is None:
        text = text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
        write_text(path, text)
        return f"{key} = {value}"
    following = re.search(r"^\[", text[header.end() :], re.M)
    end = header.end() + following.start() if following else len(text)
    body = text[header.end() : end]
    line = re.compile(rf"^({re.escape(key)}\s*=\s*)([^#\n]*?)(\s*#.*)?$", re.M)
    if line.search(body):
        body = line.sub(lambda m: f"{m.group(1)}{value}{m.group(3) or ''}", body, count=1)
    else:
        body = body.rstrip("\n") + f"\n{key} = {value}  # set by kit bench data\n\n"
    write_text(path, text[: header.end()] + body + text[end:])
    return f"{key} = {value}"


def format_table(result: dict) -> str:
    """The stage times and the loader table as text."""
    lines = [f"device {result['device']}, {result['images']} training images"]
    lines += [f"  {name:<16} {ms:8.3f} ms/img" for name, ms in result["stages_ms"].items()]
    lines.append(f"  {'num_workers':>11} {'batch_size':>10} {'img/s':>10}")
    for row in result["loader"]:
        lines.append(
            f"  {row['num_workers']:>11} {row['batch_size']:>10} {row['img_per_s']:>10.1f}"
        )
    rec = result["recommended"]
    lines.append(
        f"recommended: train.num_workers = {rec['num_workers']} "
        f"({rec['img_per_s']:.0f} img/s at batch {rec['batch_size']})"
    )
    return "\n".join(lines)
