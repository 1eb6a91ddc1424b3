"""A one-file HTML report on a competition's training images: classes, folds, sizes, modes,
normalisation statistics, samples, duplicates and unreadable files.

The report is self-contained (plots and thumbnails are embedded PNGs, no external CSS or JS), so it
can be opened offline, attached to an issue or copied off a Kaggle kernel as it is.
"""

from __future__ import annotations

import base64
import html
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

from kit.data.audit import hash_bytes
from kit.data.images import to_rgb
from kit.errors import DataError, KitError
from kit.fileio import write_text

THUMBNAIL_PX = 96
# Past these counts a per-class plot or grid stops being readable and the HTML gets heavy.
MAX_LABELLED_CLASSES = 60
MAX_SAMPLE_CLASSES = 100
MAX_LISTED = 200


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
    thumbnail: str | None = None


def write_eda_report(
    items: pd.DataFrame,
    out_html: Path,
    *,
    classes: list | None = None,
    title: str = "",
    samples_per_class: int = 8,
    max_images: int | None = None,
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
    page = _render_page(items, labels, classes, scans, samples, summary, title)
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
    if not decode:
        return scan
    from PIL import Image

    scan.decoded = True
    try:
        with Image.open(io.BytesIO(data)) as image:
            scan.format, scan.mode = image.format, image.mode
            scan.width, scan.height = image.size
            image.load()
            rgb = to_rgb(image)
    # PIL signals a bad file with OSError, SyntaxError, ValueError, struct.error and more; any
    # of them means the file cannot be trained on, which is what this report is to tell.
    except Exception as error:
        scan.error = f"{type(error).__name__}: {error}"
        return scan
    pixels = rgb.reshape(-1, 3).astype(np.int64)
    scan.sums = pixels.sum(axis=0)
    scan.squares = (pixels * pixels).sum(axis=0)
    scan.n_pixels = len(pixels)
    if thumbnail:
        scan.thumbnail = _thumbnail_png(rgb)
    return scan


def _thumbnail_png(rgb: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(rgb)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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
    mean, std = _mean_std(decoded)
    return {
        "n_images": len(items),
        "n_files": len(scans),
        "n_classes": len(classes),
        "class_counts": class_counts,
        "unknown_labels": unknown,
        "n_unlabelled": int(items["target"].isna().sum()),
        "sizes": _sizes_summary(decoded),
        "modes": dict(Counter(s.mode for s in decoded).most_common()),
        "formats": dict(Counter(s.format for s in decoded).most_common()),
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


# ----------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    # A bare Figure on the Agg canvas: no pyplot, so a notebook's backend and state stay untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png_tag(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _class_plot(class_counts: dict) -> str:
    names = [str(c) for c in class_counts]
    counts = list(class_counts.values())
    if len(names) > MAX_LABELLED_CLASSES:
        figure = _figure(9, 3.2)
        axes = figure.add_subplot()
        axes.bar(range(len(counts)), sorted(counts, reverse=True), width=1.0, color="#4c72b0")
        axes.set_xlabel(f"{len(names)} classes, largest first")
    else:
        figure = _figure(9, 0.9 + 0.24 * len(names))
        axes = figure.add_subplot()
        axes.barh(names[::-1], counts[::-1], color="#4c72b0")
        for y, count in enumerate(counts[::-1]):
            axes.annotate(f" {count}", (count, y), va="center", fontsize=8)
        axes.set_xlabel("images")
        axes.xaxis.set_major_locator(_integer_ticks())
    axes.set_ylabel("images" if len(names) > MAX_LABELLED_CLASSES else "class")
    axes.margins(x=0.08)
    return _png_tag(figure, "class distribution")


def _fold_plot(items: pd.DataFrame, labels: pd.Series, classes: list) -> str:
    folds = pd.to_numeric(items["fold"], errors="coerce").reindex(labels.index)
    known = folds.notna() & labels.notna()
    # Plain arrays: crosstab aligns Series on their index, which repeats for multi-label rows.
    table = pd.crosstab(
        folds[known].astype(int).to_numpy(), labels[known].to_numpy(), rownames=["fold"]
    ).reindex(columns=classes, fill_value=0)
    # Colour by each class's share per fold: a balanced split is one flat colour, whatever the
    # class sizes; the numbers printed are the counts.
    share = table / table.sum(axis=0).replace(0, 1)
    n_folds, n_classes = table.shape
    labelled = n_classes <= MAX_LABELLED_CLASSES
    figure = _figure(min(2.5 + 0.45 * n_classes, 14), 1.2 + 0.4 * n_folds)
    axes = figure.add_subplot()
    shown = axes.imshow(share.to_numpy(), aspect="auto", cmap="viridis", vmin=0)
    axes.set_yticks(range(n_folds), [f"fold {f}" for f in table.index])
    if labelled:
        axes.set_xticks(range(n_classes), [str(c) for c in classes], rotation=60, ha="right")
    else:
        axes.set_xlabel(f"{n_classes} classes")
        axes.set_xticks([])
    if labelled and n_folds * n_classes <= 400:
        bright = share.to_numpy() > 0.6 * max(share.to_numpy().max(), 1e-9)
        for (y, x), count in np.ndenumerate(table.to_numpy()):
            colour = "black" if bright[y, x] else "white"
            axes.text(x, y, str(count), ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(shown, ax=axes, label="share of the class")
    return _png_tag(figure, "class balance per fold")


def _sizes_plot(scans: list[FileScan]) -> str:
    widths = np.array([s.width for s in scans])
    heights = np.array([s.height for s in scans])
    figure = _figure(10, 2.8)
    for column, (name, values) in enumerate(
        [("width (px)", widths), ("height (px)", heights), ("aspect (w / h)", widths / heights)]
    ):
        axes = figure.add_subplot(1, 3, column + 1)
        axes.hist(values, bins=min(30, max(len(np.unique(values)), 1)), color="#55a868")
        axes.set_xlabel(name)
        axes.set_ylabel("images" if column == 0 else "")
        axes.yaxis.set_major_locator(_integer_ticks())
    return _png_tag(figure, "image sizes")


# ---------------------------------------------------------------------------------------- render


def _render_page(
    items: pd.DataFrame,
    labels: pd.Series,
    classes: list,
    scans: dict[str, FileScan],
    samples: pd.DataFrame,
    summary: dict,
    title: str,
) -> str:
    decoded = [s for s in scans.values() if s.decoded and s.error is None]
    sections = [
        ("findings", "Findings", _findings_html(summary)),
        ("classes", "Classes", _classes_html(summary)),
    ]
    if "fold" in items.columns and items["fold"].notna().any():
        sections.append(("folds", "Folds", _fold_plot(items, labels, classes)))
    sections += [
        ("sizes", "Sizes", _sizes_html(summary, decoded)),
        ("modes", "Modes and formats", _modes_html(summary)),
        ("stats", "Normalisation", _stats_html(summary)),
        ("samples", "Samples", _samples_html(samples, scans, classes)),
        ("duplicates", "Duplicates", _duplicates_html(summary)),
        ("corrupt", "Unreadable files", _corrupt_html(summary)),
    ]
    heading = f"{title} — EDA" if title else "EDA report"
    nav = " · ".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "\n".join(
        f'<section id="{key}"><h2>{name}</h2>\n{content}</section>'
        for key, name, content in sections
    )
    scanned = (
        f"{summary['n_images']} rows, {summary['n_files']} files, "
        f"{summary['n_decoded']} decoded, {summary['n_classes']} classes"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{_e(heading)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{_e(heading)}</h1>
<p class="meta">{scanned} · scanned in {summary["seconds"]} s</p>
<nav>{nav}</nav>
{body}
</body></html>
"""


def _findings_html(summary: dict) -> str:
    findings = []
    corrupt, duplicates = summary["corrupt"], summary["duplicates"]
    if corrupt:
        findings.append(f'{len(corrupt)} unreadable file(s): <a href="#corrupt">see below</a>')
    disagree = sum(g["labels_disagree"] for g in duplicates)
    if disagree:
        findings.append(
            f"{disagree} set(s) of identical images carry different labels: "
            '<a href="#duplicates">see below</a>'
        )
    if duplicates:
        copies = sum(len(g["ids"]) - 1 for g in duplicates)
        findings.append(f"{copies} row(s) repeat another row's image bytes")
    empty = [c for c, n in summary["class_counts"].items() if n == 0]
    if empty:
        findings.append(f"{len(empty)} class(es) have no images: {_e(_short_list(empty))}")
    if summary["unknown_labels"]:
        findings.append(
            f"labels outside the class list: {_e(_short_list(list(summary['unknown_labels'])))}"
        )
    if summary["n_unlabelled"]:
        findings.append(f"{summary['n_unlabelled']} row(s) have no label")
    if len(summary["modes"]) > 1:
        findings.append(f"mixed image modes: {_e(', '.join(map(str, summary['modes'])))}")
    if summary["n_decoded"] < summary["n_files"]:
        findings.append(
            f"sizes, modes, statistics and corruption checks cover {summary['n_decoded']} of "
            f"{summary['n_files']} files (max_images); duplicates cover all"
        )
    if not findings:
        return '<p class="ok">Nothing to flag.</p>'
    return "<ul>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>"


def _classes_html(summary: dict) -> str:
    counts = summary["class_counts"]
    if not counts:
        return "<p>No classes.</p>"
    total = sum(counts.values()) or 1
    rows = [(_e(c), n, f"{n / total:.1%}") for c, n in counts.items()]
    table = _table(["class", "images", "share"], rows)
    return f"{_class_plot(counts)}<details><summary>counts</summary>{table}</details>"


def _sizes_html(summary: dict, decoded: list[FileScan]) -> str:
    sizes = summary["sizes"]
    if not sizes:
        return "<p>No image could be decoded.</p>"
    rows = [
        (name, sizes[key]["min"], sizes[key]["median"], sizes[key]["max"])
        for key, name in [("width", "width"), ("height", "height"), ("aspect", "aspect w/h")]
    ]
    common = ", ".join(f"{s['width']}×{s['height']} ({s['count']})" for s in sizes["most_common"])
    return (
        _sizes_plot(decoded)
        + _table(["", "min", "median", "max"], rows)
        + f"<p>Most common sizes: {common}</p>"
    )


def _modes_html(summary: dict) -> str:
    modes = _table(["PIL mode", "images"], [(_e(m), n) for m, n in summary["modes"].items()])
    formats = _table(["format", "images"], [(_e(f), n) for f, n in summary["formats"].items()])
    return f'<div class="row">{modes}{formats}</div>'


def _stats_html(summary: dict) -> str:
    if summary["mean"] is None:
        return "<p>No image could be decoded.</p>"
    rows = [
        (channel, f"{m:.4f}", f"{s:.4f}")
        for channel, m, s in zip("RGB", summary["mean"], summary["std"], strict=True)
    ]
    return (
        "<p>Per-channel mean and std in [0, 1] over every decoded pixel, after conversion to RGB "
        "as training decodes it (grey replicated, alpha dropped, 16-bit scaled). Offered for "
        "normalisation in place of ImageNet's.</p>"
        + _table(["channel", "mean", "std"], rows)
        + f"<pre>mean = {summary['mean']}\nstd = {summary['std']}</pre>"
    )


def _samples_html(samples: pd.DataFrame, scans: dict[str, FileScan], classes: list) -> str:
    if samples.empty:
        return "<p>No samples.</p>"
    blocks = []
    for label in classes:
        rows = samples[samples["label"] == label]
        if rows.empty:
            continue
        tiles = []
        for row in rows.itertuples():
            thumbnail = scans[row.path].thumbnail
            picture = (
                f'<img src="data:image/png;base64,{thumbnail}" alt="{_e(row.id)}">'
                if thumbnail
                else '<div class="broken">unreadable</div>'
            )
            tiles.append(f"<figure>{picture}<figcaption>{_e(row.id)}</figcaption></figure>")
        blocks.append(f'<h3>{_e(label)}</h3><div class="grid">{"".join(tiles)}</div>')
    note = ""
    if len(classes) > MAX_SAMPLE_CLASSES:
        note = f"<p>First {MAX_SAMPLE_CLASSES} of {len(classes)} classes shown.</p>"
    return note + "\n".join(blocks)


def _duplicates_html(summary: dict) -> str:
    groups = summary["duplicates"]
    if not groups:
        return '<p class="ok">No two files have the same bytes.</p>'
    rows = [
        (
            '<span class="bad">disagree</span>' if g["labels_disagree"] else "same",
            _e(", ".join(g["ids"])),
            _e(", ".join(map(str, g["targets"]))),
        )
        for g in groups[:MAX_LISTED]
    ]
    return (
        f"<p>{len(groups)} set(s) of byte-identical files (same blake2b hash); they belong in one "
        "group so that folds keep them together.</p>"
        + _table(["labels", "ids", "targets"], rows)
        + _more(len(groups))
    )


def _corrupt_html(summary: dict) -> str:
    corrupt = summary["corrupt"]
    if not corrupt:
        return '<p class="ok">Every decoded file opened and loaded.</p>'
    rows = [(_e(c["path"]), _e(c["error"])) for c in corrupt[:MAX_LISTED]]
    return (
        "<p>These files fail to open or decode fully (truncated, not an image, or unreadable); "
        "fix or drop them before training.</p>"
        + _table(["path", "error"], rows)
        + _more(len(corrupt))
    )


def _table(header: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _more(n: int) -> str:
    return f"<p>… and {n - MAX_LISTED} more.</p>" if n > MAX_LISTED else ""


def _short_list(values: list, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
h3 { margin: 1em 0 0.3em; font-size: 1em; }
.meta { color: #666; margin-top: 0; } nav { margin: 1em 0; }
table { border-collapse: collapse; margin: 0.6em 1.5em 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td { word-break: break-all; } th { background: #f5f5f5; }
.row { display: flex; flex-wrap: wrap; align-items: flex-start; }
.plot { max-width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; width: 96px; text-align: center; }
figure img, .broken { width: 96px; height: 96px; object-fit: contain; background: #eee;
                      image-rendering: pixelated; display: block; }
.broken { line-height: 96px; color: #b00; font-size: 12px; }
figcaption { font-size: 11px; color: #555; overflow: hidden; text-overflow: ellipsis;
             white-space: nowrap; }
.ok { color: #2a7a2a; } .bad { color: #b00; font-weight: 600; }
pre { background: #f5f5f5; padding: 0.5em; }
"""


def report_competition(competition, *, max_images: int | None = None) -> dict:
    """kit eda: the report on a competition's training images (with folds once they exist)."""
    from kit.data.folds import read_folds
    from kit.data.layout import competition_task, read_train_items

    # corrupt files are reported here, so read the table without training_table's decode check
    items, task = competition_task(competition, read_train_items(competition))
    classes = list(task.classes)
    if task.kind == "multilabel":  # the report counts label names, not 0/1 rows
        names = np.asarray(classes, dtype=object)
        items = items.assign(target=[list(names[np.asarray(t) == 1]) for t in items["target"]])
    if competition.folds_csv.exists():
        folds = read_folds(competition)[["id", "fold"]]
        items = items.merge(folds, on="id", how="left")
    out = competition.root / "eda.html"
    summary = write_eda_report(
        items, out, classes=classes, title=competition.name, max_images=max_images
    )
    return {"report": str(out), **summary}
