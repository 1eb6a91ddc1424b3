"""`kit bench data`: how fast the competition's real input pipeline feeds images, and the
num_workers that `train.num_workers = "auto"` uses on this machine.

It times each stage on the training images (decode, the fixed preprocessing, augmentation,
collate), then the DataLoader at each num_workers of a sweep up to the usable core count (never
above: a worker without a core only adds switching) x batch sizes, the way training runs it:
torch threads set as training sets them for that many workers, OpenCV at one thread per worker,
pin_memory and persistent workers on CUDA (there each uint8 batch also goes to the device and is
normalised there). The recommendation is the fewest workers within 5 % of the fastest loader,
since every extra worker costs memory and a core the model may want.

`--write` stores the recommendation in KIT_HOME/machines/<machine>.json, keyed by the
competition and what shapes its pipeline; "auto" reads it there, so a kit.toml that travels to
another machine is measured afresh there instead of carrying this machine's number. A kit.toml
that pins an integer gets the measured one written in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from kit.competition import Competition
from kit.config import CONFIG_NAME, set_toml_value
from kit.data.cache import create_image_source, disk_bytes
from kit.data.dataset import ImageDataset
from kit.data.images import load_rgb
from kit.data.layout import read_train_items
from kit.data.transforms import create_transform
from kit.device import (
    default_workers,
    intra_op_threads,
    normalise,
    pick_device,
    set_threads,
    to_unit_float,
    usable_cores,
    worker_init,
)
from kit.errors import ConfigError
from kit.fileio import kit_home, write_json

GOOD_ENOUGH = 0.95  # a setting within 5 % of the fastest counts as fast


def worker_sweep(cores: int) -> list[int]:
    """0, 1, 2, 4, 8 ... below cores, then cores itself: never more workers than cores."""
    counts, n = [0], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return sorted({*counts, max(1, cores)}) if cores >= 1 else [0]


def machine_id() -> dict:
    """What makes one machine's measurement wrong for another: host, cores, CPU, GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "host": platform.node(),
        "cores": usable_cores(),
        "cpu": platform.processor(),
        "gpu": gpu,
    }


def machine_file() -> Path:
    key = hashlib.sha256(json.dumps(machine_id(), sort_keys=True).encode()).hexdigest()[:16]
    return kit_home() / "machines" / f"{key}.json"


def pipeline_key(config, root) -> str:
    """The competition folder and everything that shapes its loader's cost per image."""
    shape = {
        "root": str(Path(root).resolve()) if root is not None else "",
        "data": {k: v for k, v in config.to_dict()["data"].items() if k != "skip_bad"},
        "augment": config.augment.train,
        "image_size": config.train.image_size,
        "batch_size": config.train.batch_size,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measured_workers(config, root) -> dict | None:
    """The stored measurement for this competition's pipeline on this machine, or None."""
    path = machine_file()
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored.get("pipelines", {}).get(pipeline_key(config, root))


def resolve_workers(config, root, device, ranks: int = 1) -> tuple[int, str]:
    """(num_workers per rank, where it came from) for train.num_workers, which may be "auto"."""
    value = config.train.num_workers
    if value != "auto":
        return int(value), "kit.toml"
    stored = measured_workers(config, root)
    if stored is not None:
        most = max(0, usable_cores() // max(1, ranks) - (1 if ranks > 1 else 0))
        return min(int(stored["num_workers"]), most), "measured by kit bench data"
    return default_workers(device, ranks), "default (kit bench data --write measures it)"


def bench_data(
    competition: Competition,
    *,
    workers: list[int] | None = None,
    batch_sizes: list[int] | None = None,
    batches: int = 8,
    write: bool = False,
) -> dict:
    """Stage times (ms per image) and loader img/s per (num_workers, batch_size); a recommendation."""
    config = competition.config
    cores = usable_cores()
    workers = workers if workers is not None else worker_sweep(cores)
    batch_sizes = batch_sizes or sorted(
        {max(1, config.train.batch_size // 2), config.train.batch_size}
    )
    if batches < 1 or min(batch_sizes) < 1 or min(workers) < 0:
        raise ConfigError("bench data: batches and batch sizes must be >= 1, workers >= 0")
    if max(workers) > cores:
        raise ConfigError(
            f"bench data: --workers {max(workers)} is more than the {cores} usable core(s); "
            f"time at most {cores}"
        )
    items = read_train_items(competition)
    needed = max(batch_sizes) * (batches + 1)
    paths = (items["path"].tolist() * (needed // max(len(items), 1) + 1))[:needed]
    source = create_image_source(config, competition.root, items, augment=config.augment.train)
    transform = create_transform(config.augment.train, config.train.image_size, "augment.train")
    device = pick_device(config.train.device)
    threads_before = torch.get_num_threads()

    sample = paths[: min(64, len(paths))]
    stages = {}
    started = time.perf_counter()
    decoded = [load_rgb(p) for p in sample]
    stages["decode"] = _per_image(started, len(sample))
    started = time.perf_counter()
    prepared = [source(p) for p in sample]  # reduced decode, crop, preprocess, cache (filled)
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
    try:
        for batch_size in batch_sizes:
            for n in workers:
                threads = set_threads(intra_op_threads(n, 1, config.train.threads))
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=False,
                    num_workers=n,
                    pin_memory=cuda,
                    persistent_workers=n > 0,
                    drop_last=True,
                    worker_init_fn=worker_init if n > 0 else None,
                )
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
                rows.append(
                    {
                        "num_workers": n,
                        "batch_size": batch_size,
                        "threads": threads,
                        "img_per_s": round(seen / seconds, 1),
                    }
                )
                del iterator, loader
    finally:
        set_threads(threads_before)
    recommended = recommend(rows, config.train.batch_size)
    result = {
        "device": str(device),
        "cores": cores,
        "images": len(items),
        "stages_ms": stages,
        "loader": rows,
        "recommended": recommended,
        "written": None,
        "cache_bytes": disk_bytes(source.cache_dir) if source.cache_dir is not None else None,
        "cache_format": config.data.cache_format if source.cache_dir is not None else None,
    }
    if write:
        result["written"] = store_measurement(competition, recommended, str(device))
    return result


def store_measurement(competition: Competition, recommended: dict, device: str) -> str:
    """Save the recommendation for "auto" on this machine; rewrite a pinned kit.toml integer."""
    path = machine_file()
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    stored["machine"] = machine_id()
    stored.setdefault("pipelines", {})[pipeline_key(competition.config, competition.root)] = {
        **recommended,
        "device": device,
        "competition": str(competition.root),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json(path, stored)
    written = f'{path} (train.num_workers = "auto" uses it on this machine)'
    if competition.config.train.num_workers != "auto":
        line = set_toml_value(
            competition.root / CONFIG_NAME,
            "train",
            "num_workers",
            str(recommended["num_workers"]),
            by="kit bench data",
        )
        written += f"; kit.toml pins a number: {line}"
    return written


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
    return {
        "num_workers": choice["num_workers"],
        "batch_size": choice["batch_size"],
        "img_per_s": choice["img_per_s"],
    }


def format_table(result: dict) -> str:
    """The stage times and the loader table as text."""
    lines = [
        f"device {result['device']}, {result['cores']} usable core(s), "
        f"{result['images']} training images"
    ]
    lines += [f"  {name:<16} {ms:8.3f} ms/img" for name, ms in result["stages_ms"].items()]
    if result.get("cache_bytes") is not None:
        lines.append(
            f"  cache ({result['cache_format']}) {result['cache_bytes'] / 2**20:.1f} MiB on disk"
        )
    lines.append(f"  {'num_workers':>11} {'threads':>7} {'batch_size':>10} {'img/s':>10}")
    for row in result["loader"]:
        lines.append(
            f"  {row['num_workers']:>11} {row['threads']:>7} {row['batch_size']:>10} "
            f"{row['img_per_s']:>10.1f}"
        )
    rec = result["recommended"]
    lines.append(
        f"recommended: train.num_workers = {rec['num_workers']} "
        f"({rec['img_per_s']:.0f} img/s at batch {rec['batch_size']})"
    )
    if result.get("written"):
        lines.append(f"written: {result['written']}")
    return "\n".join(lines)
