"""A one-file HTML report on a competition's training images: classes, folds, sizes, modes,
normalisation statistics, samples, duplicates and unreadable files.

This module scans (every file read and hashed once; headers for all, pixels for a sample) and
summarises; kit/data/eda_page.py renders the summary as the page.

The report is self-contained (plots and thumbnails are embedded PNGs, no external CSS or JS), so it
can be opened offline, attached to an issue or copied off a Kaggle kernel as it is.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kit import html as H
from kit.data.audit import hash_bytes
from kit.data.eda_page import MAX_SAMPLE_CLASSES, render_page
from kit.data.folds import read_folds
from kit.data.images import to_rgb
from kit.data.layout import competition_task, read_train_items
from kit.errors import DataError, KitError
from kit.fileio import write_text
from kit.workbench.drift import MAX_IMAGES, check_drift, drift_section

THUMBNAIL_PX = 96
SAMPLE_IMAGES = 3000  # kit eda decodes this many (a fixed random subset) for pixel statistics


@dataclass
class FileScan:
    """What one read of one file tells: its hash and, when decoded, its shape and pixel sums."""

    path: str
    hash: str | None = None
    error: str | None = None
    decoded: bool = False
    format: str | None = None
    mode: str | None = None
    width: int = 0
    height: int = 0
    # Per-channel sums of uint8 values and of their squares: exact integers, scaled to [0, 1] once.
    sums: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    n_pixels: int = 0
    thumbnail: bytes | None = None  # PNG of the sampled files, made from the one decode


def write_eda_report(
    items: pd.DataFrame,
    out_html: Path,
    *,
    classes: list | None = None,
    title: str = "",
    samples_per_class: int = 8,
    max_images: int | None = None,
    extra_sections: list[tuple[str, str, str]] = (),
) -> dict:
    """Write the report to out_html and return its numbers (mean/std are offered for normalisation).

    Every file is read once and hashed, so duplicates are exact over the whole set; max_images
    caps how many files (a fixed random subset) are decoded for sizes, modes, statistics, samples
    and corruption checks.
    """
    started = time.perf_counter()
    missing = [c for c in ("id", "path", "target") if c not in items.columns]
    if missing:
        raise DataError(f"items lack column(s) {', '.join(missing)}; pass id, path and target")
    if items.empty:
        raise DataError("no training items to report on; check data.train_csv in kit.toml")
    if max_images is not None and max_images < 1:
        raise KitError(f"max_images is {max_images}; give at least 1, or None to decode all")

    # A fresh 0..n-1 index: multi-label rows are exploded and joined back by it.
    items = items.reset_index(drop=True)
    labels = _labels_by_row(items)
    if classes is None:
        classes = _sorted(labels.dropna().unique())
    classes = [_plain(c) for c in classes]
    paths = list(dict.fromkeys(items["path"]))
    to_decode = _subsample(paths, max_images)
    # Samples come from the decoded files, so max_images bounds the decoding work and the
    # statistics stay those of a uniform subsample.
    decodable = items[items["path"].isin(to_decode)]
    decodable_labels = labels[labels.index.isin(decodable.index)]
    samples = _pick_samples(decodable_labels, decodable, classes, samples_per_class)
    scans = _scan(paths, to_decode, thumbnails=set(samples["path"]))

    summary = _summarise(items, labels, classes, scans)
    summary["n_decoded"] = sum(scan.decoded for scan in scans.values())
    # The page can only show the time up to rendering; the caller gets the full time below.
    summary["seconds"] = round(time.perf_counter() - started, 2)
    page = render_page(items, labels, classes, scans, samples, summary, title, extra_sections)
    write_text(Path(out_html), page)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


# ---------------------------------------------------------------------------------------- scanning


def _scan(paths: list[str], to_decode: set[str], thumbnails: set[str]) -> dict[str, FileScan]:
    # Threads overlap file reads with decoding; PIL and numpy release the GIL for the heavy parts.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        scans = pool.map(
            lambda path: _scan_file(path, path in to_decode, path in thumbnails), paths
        )
        return {scan.path: scan for scan in scans}


def _scan_file(path: str, decode: bool, thumbnail: bool) -> FileScan:
    scan = FileScan(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        scan.error = f"cannot read: {error.strerror}"
        return scan
    scan.hash = hash_bytes(data)

    scan.decoded = decode
    try:
        with Image.open(io.BytesIO(data)) as image:
            # the header gives size, mode and format for every file; pixels only for the sample
            scan.format, scan.mode = image.format, image.mode
            scan.width, scan.height = image.size
            if not decode:
                return scan
            image.load()
            rgb = to_rgb(image)
    # PIL signals a bad file with OSError, SyntaxError, ValueError, struct.error and more; any
    # of them means the file cannot be trained on, which is what this report is to tell.
    except Exception as error:
        scan.error = f"{type(error).__name__}: {error}"
        return scan
    # per-channel histograms give the exact integer sums at a fraction of an int64 copy's cost
    pixels = rgb.reshape(-1, 3)
    levels = np.arange(256, dtype=np.int64)
    counts = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)])
    scan.sums = counts @ levels
    scan.squares = counts @ (levels * levels)
    scan.n_pixels = len(pixels)
    if thumbnail:
        scan.thumbnail = H.rgb_thumbnail_png(rgb, THUMBNAIL_PX)
    return scan


def _subsample(paths: list[str], max_images: int | None) -> set[str]:
    if max_images is None or len(paths) <= max_images:
        return set(paths)
    # Sorted first, so the same files are chosen whatever the table's row order.
    ordered = sorted(paths)
    chosen = np.random.default_rng(0).choice(len(ordered), size=max_images, replace=False)
    return {ordered[i] for i in chosen}


def _labels_by_row(items: pd.DataFrame) -> pd.Series:
    """One label per row (index repeats for multi-label rows); unlabelled rows hold NaN."""
    return items["target"].explode().map(_plain)


def _pick_samples(
    labels: pd.Series, items: pd.DataFrame, classes: list, per_class: int
) -> pd.DataFrame:
    """id, path, label of up to per_class random rows (fixed seed) of each class."""
    rows = items[["id", "path"]].join(labels.rename("label"))
    rows = rows[rows["label"].isin(classes[:MAX_SAMPLE_CLASSES])]
    if per_class < 1 or rows.empty:
        return rows.iloc[:0]
    picked = [
        group.sample(n=min(per_class, len(group)), random_state=0)
        for _, group in rows.groupby("label", sort=False)
    ]
    return pd.concat(picked)


# --------------------------------------------------------------------------------------- summary


def _summarise(
    items: pd.DataFrame, labels: pd.Series, classes: list, scans: dict[str, FileScan]
) -> dict:
    counts = Counter(labels.dropna())
    class_counts = {c: counts.get(c, 0) for c in classes}
    unknown = {label: n for label, n in counts.items() if label not in class_counts}
    decoded = [s for s in scans.values() if s.decoded and s.error is None]
    sized = [s for s in scans.values() if s.width > 0 and s.error is None]  # headers: every file
    mean, std = _mean_std(decoded)
    return {
        "n_images": len(items),
        "n_files": len(scans),
        "n_classes": len(classes),
        "class_counts": class_counts,
        "unknown_labels": unknown,
        "n_unlabelled": int(items["target"].isna().sum()),
        "sizes": _sizes_summary(sized),
        "modes": dict(Counter(s.mode for s in sized).most_common()),
        "formats": dict(Counter(s.format for s in sized).most_common()),
        "mean": mean,
        "std": std,
        "duplicates": _duplicate_groups(items, labels, scans),
        "corrupt": [
            {"path": s.path, "error": s.error} for s in scans.values() if s.error is not None
        ],
    }


def _mean_std(scans: list[FileScan]) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel mean and std in [0, 1] over every decoded pixel (large images weigh more)."""
    n_pixels = sum(s.n_pixels for s in scans)
    if n_pixels == 0:
        return None, None
    sums = sum(s.sums for s in scans).astype(np.float64) / 255.0
    squares = sum(s.squares for s in scans).astype(np.float64) / 255.0**2
    mean = sums / n_pixels
    std = np.sqrt(np.maximum(squares / n_pixels - mean**2, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _sizes_summary(scans: list[FileScan]) -> dict:
    if not scans:
        return {}
    widths = np.array([s.width for s in scans])
    heights = np.array([s.height for s in scans])
    aspects = widths / heights

    def spread(values: np.ndarray) -> dict:
        return {
            "min": _plain(values.min()),
            "median": _plain(np.median(values)),
            "max": _plain(values.max()),
        }

    common = Counter(zip(widths.tolist(), heights.tolist(), strict=True)).most_common(5)
    return {
        "width": spread(widths),
        "height": spread(heights),
        "aspect": {k: round(v, 4) for k, v in spread(aspects).items()},
        "most_common": [{"width": w, "height": h, "count": n} for (w, h), n in common],
    }


def _duplicate_groups(
    items: pd.DataFrame, labels: pd.Series, scans: dict[str, FileScan]
) -> list[dict]:
    """Rows whose files have the same bytes; groups whose labels disagree come first."""
    hashes = items["path"].map(lambda p: scans[p].hash)
    repeated = hashes.notna() & hashes.duplicated(keep=False)
    # Only repeated rows are looked at: on a clean set of 100k images the loop never runs.
    repeated_labels = labels[labels.index.isin(items.index[repeated])].dropna()
    label_set_of = {
        row: tuple(sorted(values, key=str)) for row, values in repeated_labels.groupby(level=0)
    }
    groups = []
    for _, rows in items[repeated].groupby(hashes[repeated], sort=False):
        label_sets = {label_set_of.get(row, ()) for row in rows.index}
        groups.append(
            {
                "ids": rows["id"].astype(str).tolist(),
                "targets": [_plain(t) for t in rows["target"]],
                "labels_disagree": len(label_sets) > 1,
            }
        )
    groups.sort(key=lambda g: (not g["labels_disagree"], -len(g["ids"])))
    return groups


def _plain(value):
    """A JSON-friendly Python value for numpy scalars and label lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value


def _sorted(values: Iterable) -> list:
    # Integers before strings, so mixed label types still sort; the order matches layout.class_list.
    return sorted(values, key=lambda v: (isinstance(v, str), v))


def report_competition(competition, *, max_images: int | None = SAMPLE_IMAGES) -> dict:
    """kit eda: the report on a competition's training images (with folds once they exist)."""

    # corrupt files are reported here, so read the table without training_table's decode check
    items, task = competition_task(competition, read_train_items(competition))
    classes = list(task.classes)
    items = items.assign(target=task.label_names(items["target"]))  # names, not 0/1 rows
    if competition.folds_csv.exists():
        folds = read_folds(competition)[["id", "fold"]]
        items = items.merge(folds, on="id", how="left")
    out = competition.root / "eda.html"
    drift = _drift_section(competition, max_images)
    summary = write_eda_report(
        items,
        out,
        classes=classes,
        title=competition.name,
        max_images=max_images,
        extra_sections=[("drift", "Train vs test", drift["html"])] if drift else [],
    )
    return {"report": str(out), **summary, "drift": drift["summary"] if drift else None}


def _drift_section(competition, max_images: int | None) -> dict | None:
    """kit drift's findings for eda.html, when the test set is there to compare with."""
    try:
        result = check_drift(competition, max_images=min(max_images or MAX_IMAGES, MAX_IMAGES))
    except (KitError, ValueError) as error:  # no test data yet, or too few images to compare
        note = f"<p>Not compared: {H.escape(error)}</p>"
        return {"html": note, "summary": None}
    summary = {k: v for k, v in result.items() if k != "scores"}
    return {"html": drift_section(result, result["scores"]), "summary": summary}
