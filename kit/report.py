"""runs/<run>/report.html: learning curves per fold, confusion matrix, per-class scores, and the
likely label errors (confident out-of-fold disagreements), in one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.fileio import write_text

MAX_MATRIX_CLASSES = 40  # past this a confusion matrix is unreadable; per-class scores remain
LABEL_ERRORS = 24  # thumbnails of the most confident disagreements


def read_epochs(log_path: Path) -> pd.DataFrame:
    """The epoch events of log.jsonl; a resumed epoch logged twice counts once (the last)."""
    rows = []
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "epoch":
                rows.append(event)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.drop_duplicates(["fold", "epoch"], keep="last").sort_values(["fold", "epoch"])


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _thumbnail(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((96, 96))
            if max(image.size) < 48:
                image = image.resize((image.width * 4, image.height * 4), Image.NEAREST)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        return "(unreadable)"
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def label_errors(oof: pd.DataFrame, targets: np.ndarray, task, limit: int = LABEL_ERRORS):
    """Single-label OOF rows whose prediction disagrees with the label, most confident first."""
    probs = oof[task.columns].to_numpy()
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != targets)
    margin = probs[wrong, predicted[wrong]] - probs[wrong, targets[wrong]]
    order = wrong[np.argsort(-margin, kind="stable")][:limit]
    return pd.DataFrame(
        {
            "id": oof["id"].to_numpy()[order],
            "label": [task.classes[i] for i in targets[order]],
            "predicted": [task.classes[i] for i in predicted[order]],
            "confidence": probs[order, predicted[order]],
            "p_label": probs[order, targets[order]],
        }
    )


def write_run_report(competition: Competition, run: str) -> Path:
    """Write runs/<run>/report.html from log.jsonl, oof.csv and metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from kit.data.folds import training_table

    run_dir = competition.run_dir(run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table, task = training_table(competition)
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    items = table.set_index("id").loc[oof["id"]]
    targets = task.encode(items["target"])
    decided = task.decide(oof[task.columns].to_numpy())
    parts = [
        f"<h1>run {html.escape(run)}</h1>",
        f"<p>{html.escape(metrics['metric'])}: CV {metrics['cv']:.5f} ± "
        f"{metrics.get('cv_std', 0):.5f} over folds {metrics.get('fold_ids')}; "
        f"fold scores {[round(s, 5) for s in metrics.get('folds', [])]}"
        + ("" if metrics.get("complete", True) else f"; missing {metrics['missing_folds']}")
        + "</p>",
    ]

    epochs = read_epochs(run_dir / "log.jsonl")
    if not epochs.empty:
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for fold, rows in epochs.groupby("fold"):
            axes[0].plot(rows["epoch"], rows["loss"], marker="o", label=f"fold {fold}")
            axes[1].plot(rows["epoch"], rows[metrics["metric"]], marker="o", label=f"fold {fold}")
        axes[0].set(title="training loss", xlabel="epoch")
        axes[1].set(title=f"validation {metrics['metric']}", xlabel="epoch")
        axes[1].legend(fontsize=7)
        parts += ["<h2>Learning curves</h2>", _png(figure)]

    if task.kind == "multilabel":
        precision, recall, f1, support = precision_recall_fscore_support(
            targets.astype(int), decided, zero_division=0
        )
        labels = list(task.classes)
    else:
        # class indices, or the grades themselves for an ordinal task
        codes = np.arange(len(task.classes))
        if task.kind == "ordinal":
            codes = np.asarray(task.classes, dtype=int)
        truth = targets.astype(int)
        labels = list(task.classes)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, decided, labels=codes, zero_division=0
        )
        if len(codes) <= MAX_MATRIX_CLASSES:
            matrix = confusion_matrix(truth, decided, labels=codes)
            size = 2.5 + 0.35 * len(codes)
            figure, axis = plt.subplots(figsize=(size, size))
            axis.imshow(matrix, cmap="Blues")
            axis.set(xlabel="predicted", ylabel="label", xticks=range(len(codes)),
                     yticks=range(len(codes)), xticklabels=labels, yticklabels=labels)  # fmt: skip
            for (i, j), count in np.ndenumerate(matrix):
                if count:
                    axis.text(j, i, str(count), ha="center", va="center", fontsize=7)
            parts += ["<h2>Confusion matrix (out of fold)</h2>", _png(figure)]
    scores = pd.DataFrame(
        {"class": labels, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    parts += [
        "<h2>Per-class scores (out of fold)</h2>",
        scores.to_html(index=False, float_format="%.4f"),
    ]

    if task.kind in ("multiclass", "binary"):
        errors = label_errors(oof, targets, task)
        if len(errors):
            paths = items["path"].to_numpy()
            position = {i: k for k, i in enumerate(oof["id"])}
            cells = []
            for row in errors.itertuples():
                thumb = _thumbnail(str(paths[position[row.id]]))
                cells.append(
                    f"<figure>{thumb}<figcaption>{html.escape(str(row.id))}<br>label "
                    f"{html.escape(str(row.label))}, predicted {html.escape(str(row.predicted))} "
                    f"({row.confidence:.2f})</figcaption></figure>"
                )
            parts += [
                "<h2>Likely label errors</h2>",
                "<p>Out-of-fold predictions that disagree with the label, most confident first. "
                "Check these images before trusting the label.</p>",
                f'<div class="grid">{"".join(cells)}</div>',
            ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>kit run {html.escape(run)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        ".grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;font-size:11px;width:110px}"
        "</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    )
    path = run_dir / "report.html"
    write_text(path, page)
    return path
