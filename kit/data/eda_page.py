"""eda.html: the page of `kit eda`'s summary (kit/data/eda.py scans and summarises).

Plots, tables, escaping and the embedded PNGs come from kit/html.py, shared with report.html.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit import html as H

if TYPE_CHECKING:
    from kit.data.eda import FileScan

# Past these counts a per-class plot, grid or list stops being readable and the HTML gets heavy.
MAX_LABELLED_CLASSES = 60
MAX_SAMPLE_CLASSES = 100  # classes that get sample thumbnails
MAX_LISTED = 200


def _class_plot(class_counts: dict) -> str:
    names = [str(c) for c in class_counts]
    counts = list(class_counts.values())
    if len(names) > MAX_LABELLED_CLASSES:
        figure = H.figure(9, 3.2)
        axes = figure.add_subplot()
        axes.bar(range(len(counts)), sorted(counts, reverse=True), width=1.0, color="#4c72b0")
        axes.set_xlabel(f"{len(names)} classes, largest first")
    else:
        figure = H.figure(9, 0.9 + 0.24 * len(names))
        axes = figure.add_subplot()
        axes.barh(names[::-1], counts[::-1], color="#4c72b0")
        for y, count in enumerate(counts[::-1]):
            axes.annotate(f" {count}", (count, y), va="center", fontsize=8)
        axes.set_xlabel("images")
        axes.xaxis.set_major_locator(H.integer_ticks())
    axes.set_ylabel("images" if len(names) > MAX_LABELLED_CLASSES else "class")
    axes.margins(x=0.08)
    return H.figure_tag(figure, "class distribution")


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
    figure = H.figure(min(2.5 + 0.45 * n_classes, 14), 1.2 + 0.4 * n_folds)
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
    return H.figure_tag(figure, "class balance per fold")


def _sizes_plot(scans: list[FileScan]) -> str:
    widths = np.array([s.width for s in scans])
    heights = np.array([s.height for s in scans])
    figure = H.figure(10, 2.8)
    for column, (name, values) in enumerate(
        [("width (px)", widths), ("height (px)", heights), ("aspect (w / h)", widths / heights)]
    ):
        axes = figure.add_subplot(1, 3, column + 1)
        axes.hist(values, bins=min(30, max(len(np.unique(values)), 1)), color="#55a868")
        axes.set_xlabel(name)
        axes.set_ylabel("images" if column == 0 else "")
        axes.yaxis.set_major_locator(H.integer_ticks())
    return H.figure_tag(figure, "image sizes")


# ---------------------------------------------------------------------------------------- render


def render_page(
    items: pd.DataFrame,
    labels: pd.Series,
    classes: list,
    scans: dict[str, FileScan],
    samples: pd.DataFrame,
    summary: dict,
    title: str,
    extra_sections: list[tuple[str, str, str]] = (),
) -> str:
    sized = [s for s in scans.values() if s.width > 0 and s.error is None]
    sections = [
        ("findings", "Findings", _findings_html(summary)),
        ("classes", "Classes", _classes_html(summary)),
    ]
    if "fold" in items.columns and items["fold"].notna().any():
        sections.append(("folds", "Folds", _fold_plot(items, labels, classes)))
    sections += [
        ("sizes", "Sizes", _sizes_html(summary, sized)),
        ("modes", "Modes and formats", _modes_html(summary)),
        ("stats", "Normalisation", _stats_html(summary)),
        ("samples", "Samples", _samples_html(samples, scans, classes)),
        ("duplicates", "Duplicates", _duplicates_html(summary)),
        ("corrupt", "Unreadable files", _corrupt_html(summary)),
        *extra_sections,  # (anchor, heading, html): e.g. train vs test from kit.workbench.drift
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
<title>{H.escape(heading)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{H.escape(heading)}</h1>
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
        findings.append(f"{len(empty)} class(es) have no images: {H.escape(_short_list(empty))}")
    if summary["unknown_labels"]:
        findings.append(
            f"labels outside the class list: {H.escape(_short_list(list(summary['unknown_labels'])))}"
        )
    if summary["n_unlabelled"]:
        findings.append(f"{summary['n_unlabelled']} row(s) have no label")
    if len(summary["modes"]) > 1:
        findings.append(f"mixed image modes: {H.escape(', '.join(map(str, summary['modes'])))}")
    if summary["n_decoded"] < summary["n_files"]:
        findings.append(
            f"pixel statistics and decode checks cover {summary['n_decoded']} of "
            f"{summary['n_files']} files (a fixed sample: --sample); sizes, modes (from headers) "
            "and duplicates cover all"
        )
    if not findings:
        return '<p class="ok">Nothing to flag.</p>'
    return "<ul>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>"


def _classes_html(summary: dict) -> str:
    counts = summary["class_counts"]
    if not counts:
        return "<p>No classes.</p>"
    total = sum(counts.values()) or 1
    rows = [(H.escape(c), n, f"{n / total:.1%}") for c, n in counts.items()]
    table = H.table(["class", "images", "share"], rows)
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
        + H.table(["", "min", "median", "max"], rows)
        + f"<p>Most common sizes: {common}</p>"
    )


def _modes_html(summary: dict) -> str:
    modes = H.table(["PIL mode", "images"], [(H.escape(m), n) for m, n in summary["modes"].items()])
    formats = H.table(
        ["format", "images"], [(H.escape(f), n) for f, n in summary["formats"].items()]
    )
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
        + H.table(["channel", "mean", "std"], rows)
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
                H.img_tag(thumbnail, row.id, "thumb")
                if thumbnail
                else '<div class="broken">unreadable</div>'
            )
            tiles.append(f"<figure>{picture}<figcaption>{H.escape(row.id)}</figcaption></figure>")
        blocks.append(f'<h3>{H.escape(label)}</h3><div class="grid">{"".join(tiles)}</div>')
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
            H.escape(", ".join(g["ids"])),
            H.escape(", ".join(map(str, g["targets"]))),
        )
        for g in groups[:MAX_LISTED]
    ]
    return (
        f"<p>{len(groups)} set(s) of byte-identical files (same blake2b hash); they belong in one "
        "group so that folds keep them together.</p>"
        + H.table(["labels", "ids", "targets"], rows)
        + _more(len(groups))
    )


def _corrupt_html(summary: dict) -> str:
    corrupt = summary["corrupt"]
    if not corrupt:
        return '<p class="ok">Every decoded file opened and loaded.</p>'
    rows = [(H.escape(c["path"]), H.escape(c["error"])) for c in corrupt[:MAX_LISTED]]
    return (
        "<p>These files fail to open or decode fully (truncated, not an image, or unreadable); "
        "fix or drop them before training.</p>"
        + H.table(["path", "error"], rows)
        + _more(len(corrupt))
    )


def _more(n: int) -> str:
    return f"<p>… and {n - MAX_LISTED} more.</p>" if n > MAX_LISTED else ""


def _short_list(values: list, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


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
