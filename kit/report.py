"""The pages a player reads after training, each one self-contained HTML:

- runs/<run>/report.html: a header (model, image size, epochs, recipe, time, commit), learning
  curves per fold (training and validation loss, the metric on a zoomed axis, the learning rate),
  the OOF confusion matrix (counts and normalised by label, with colour bars), per-class scores,
  the TTA views scored on OOF (after `kit predict`), and the likely label errors.
- runs/index.html + runs/cv_vs_lb.png: every run of the ledger, and CV against leaderboard score.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from kit import html as H
from kit.competition import Competition
from kit.data.folds import training_table
from kit.fileio import atomic_open, write_text
from kit.ledger import list_runs
from kit.run import Run

MAX_MATRIX_CLASSES = 40  # past this a confusion matrix is unreadable; per-class scores remain
LABEL_ERRORS = 24  # thumbnails of the most confident disagreements
# the recipe fields shown in the header (the whole resolved config is runs/<run>/config.toml)
HEADER_RECIPE = (
    "batch_size",
    "lr",
    "schedule",
    "weight_decay",
    "label_smoothing",
    "ema_decay",
    "mixup_alpha",
    "cutmix_alpha",
    "balance",
    "pseudo",
)
RUNS_PLOT = "cv_vs_lb.png"  # under runs/
RUNS_PAGE = "index.html"  # under runs/


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


def label_errors(oof: pd.DataFrame, targets: np.ndarray, task, limit: int = LABEL_ERRORS):
    """Single-label OOF rows whose prediction disagrees with the label, sorted by the confidence
    of the predicted class (the number shown), most confident first."""
    probs = oof[task.columns].to_numpy()
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != targets)
    confidence = probs[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    return pd.DataFrame(
        {
            "id": oof["id"].to_numpy()[order],
            "label": [task.classes[i] for i in targets[order]],
            "predicted": [task.classes[i] for i in predicted[order]],
            "confidence": probs[order, predicted[order]],
            "p_label": probs[order, targets[order]],
        }
    )


def zoomed_limits(values: np.ndarray, fit: np.ndarray | None = None) -> tuple[float, float] | None:
    """y limits that show where the scores are: from the lowest of the `fit` values (default all)
    to the best of all, padded. The learning curves fit the later half of the epochs, so the
    first epochs' low scores fall below the axis instead of flattening the 0.99 region."""
    values = np.asarray(values, dtype=float)
    chosen = values if fit is None or not np.any(fit) else values[np.asarray(fit)]
    chosen, values = chosen[np.isfinite(chosen)], values[np.isfinite(values)]
    if len(values) == 0 or len(chosen) == 0:
        return None
    low, high = float(chosen.min()), float(values.max())
    pad = max((high - low) * 0.1, 1e-4)
    return low - pad, high + pad


def write_run_report(competition: Competition, run: str) -> Path:
    """Write runs/<run>/report.html from run.json, config.toml, log.jsonl, oof.csv, metrics.json."""
    opened = competition.run(run)
    metrics = opened.metrics
    table, task = training_table(competition)
    oof = opened.read_oof(tta=False)
    items = table.set_index("id").loc[oof["id"]]
    targets = task.encode(items["target"])
    name = metrics["metric"]
    parts = [f"<h1>run {H.escape(run)}</h1>", _header(opened, metrics)]

    epochs = read_epochs(opened.log_path)
    if not epochs.empty:
        parts += ["<h2>Learning curves</h2>", _curves(epochs, name)]
    parts += _class_sections(task, targets, oof)
    if metrics.get("cv_by_view"):
        parts += ["<h2>Test-time augmentation (out of fold)</h2>", _tta(metrics)]
    if task.single_label:
        parts += _gallery(oof, targets, task, items["path"].to_numpy())
    path = opened.report_path
    write_text(path, H.page(f"kit run {run}", "\n".join(parts)))
    return path


def _header(run: Run, metrics: dict) -> str:
    info = run.info if run.info_path.exists() else {}
    config = run.config
    t = config.train
    recipe = ", ".join(f"{key} {getattr(t, key)}" for key in HEADER_RECIPE if getattr(t, key))
    augment = ", ".join(op.get("name", "?") for op in config.augment.train) or "none"
    missing = "" if metrics.get("complete", True) else f" (missing {metrics['missing_folds']})"
    folds = ", ".join(f"{s:.5f}" for s in metrics.get("folds", []))
    rows = [
        ("CV", f"{metrics['metric']} {metrics['cv']:.5f} ± {metrics.get('cv_std', 0):.5f}"),
        ("folds", f"{metrics.get('fold_ids')}{missing}: {folds}"),
        ("best epochs", str(metrics.get("best_epochs", []))),
    ]
    if "cv_tta" in metrics:
        rows.append(("CV with TTA", f"{metrics['cv_tta']:.5f} ({', '.join(metrics['tta'])})"))
    rows += [
        ("model", f"{info.get('model', config.model.name)} ({info.get('task', '')})"),
        ("image size", f"{t.image_size} px"),
        ("epochs", str(t.epochs)),
        ("recipe", recipe),
        ("augment", augment),
        ("started", f"{info.get('started_at', '?')} on {info.get('device', '?')}"),
        ("training time", _duration(metrics.get("seconds"))),
        ("commit", info.get("git_commit") or "not a git checkout"),
        ("config", "config.toml beside this page"),
    ]
    cells = "".join(f"<dt>{H.escape(k)}</dt><dd>{H.escape(v)}</dd>" for k, v in rows)
    return f'<dl class="header">{cells}</dl>'


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _curves(epochs: pd.DataFrame, metric: str) -> str:
    has_val_loss = "val_loss" in epochs.columns and epochs["val_loss"].notna().any()
    made = H.figure(13, 3.6, layout=None)
    made.subplots_adjust(left=0.05, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
    loss, score, lr = made.subplots(1, 3)
    for fold, rows in epochs.groupby("fold"):
        line = loss.plot(rows["epoch"], rows["loss"], marker="o", ms=3, label=f"fold {fold} train")
        if has_val_loss:
            loss.plot(
                rows["epoch"],
                rows["val_loss"],
                marker="s",
                ms=3,
                ls="--",
                color=line[0].get_color(),
                label=f"fold {fold} valid",
            )
        score.plot(rows["epoch"], rows[metric], marker="o", ms=3, label=f"fold {fold}")
        lr.plot(rows["epoch"], rows["lr"], marker="o", ms=3, label=f"fold {fold}")
    title = "loss (solid: training, dashed: validation)" if has_val_loss else "training loss"
    loss.set(title=title, xlabel="epoch")
    score.set(title=f"validation {metric} (zoomed on the later epochs)", xlabel="epoch")
    last = epochs["epoch"].max()
    limits = zoomed_limits(epochs[metric].to_numpy(), (epochs["epoch"] > last / 2).to_numpy())
    if limits:
        score.set_ylim(*limits)
    lr.set(title="learning rate at the epoch's end", xlabel="epoch")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for axes in (loss, score, lr):
        axes.xaxis.set_major_locator(H.integer_ticks())
        axes.grid(alpha=0.3)
    score.legend(fontsize=7)
    return H.figure_tag(made, "learning curves")


def _class_sections(task, targets: np.ndarray, oof: pd.DataFrame) -> list[str]:
    decided = task.decide(oof[task.columns].to_numpy())
    labels = list(task.classes)
    parts = []
    if task.multi_label:
        precision, recall, f1, support = precision_recall_fscore_support(
            targets.astype(int), decided, zero_division=0
        )
    else:
        # class indices, or the grades themselves for an ordinal task
        codes = task.codes()
        truth = targets.astype(int)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, decided, labels=codes, zero_division=0
        )
        if len(codes) <= MAX_MATRIX_CLASSES:
            matrix = confusion_matrix(truth, decided, labels=codes)
            parts += ["<h2>Confusion matrix (out of fold)</h2>", _confusion(matrix, labels)]
    rows = [
        (H.escape(c), *(f'<span title="{v}">{v:.4f}</span>' for v in (p, r, f)), int(n))
        for c, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True)
    ]
    parts += [
        "<h2>Per-class scores (out of fold)</h2>",
        "<p>Precision, recall and F1 of the decided labels (argmax; 0.5 per label for "
        "multi-label; the default cut-points for ordinal).</p>",
        H.table(["class", "precision", "recall", "f1", "support"], rows),
    ]
    return parts


def _confusion(matrix: np.ndarray, labels: list) -> str:
    """Counts and the same matrix normalised per label row, each with its colour bar; the text
    colour follows the cell's brightness so counts stay readable on the dark diagonal."""
    n = len(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.where(rows == 0, 1, rows)
    size = 2.4 + 0.42 * n
    made = H.figure(2 * size + 1.5, size, layout=None)
    made.subplots_adjust(left=0.07, right=0.97, bottom=0.16, top=0.9, wspace=0.3)
    for axes, values, title, fmt in (
        (made.add_subplot(1, 2, 1), matrix, "counts", "{:d}"),
        (made.add_subplot(1, 2, 2), share, "share of each label (rows sum to 1)", "{:.2f}"),
    ):
        top = values.max() if values.max() > 0 else 1
        shown = axes.imshow(values, cmap="Blues", vmin=0, vmax=top)
        axes.set(title=title, xlabel="predicted", ylabel="label")
        axes.set_xticks(range(n), [str(c) for c in labels], rotation=45 if n > 8 else 0)
        axes.set_yticks(range(n), [str(c) for c in labels])
        if n <= 25:
            for (i, j), value in np.ndenumerate(values):
                if matrix[i, j]:
                    colour = "white" if value > 0.55 * top else "black"
                    axes.text(
                        j, i, fmt.format(value), ha="center", va="center", fontsize=7, color=colour
                    )
        made.colorbar(shown, ax=axes, shrink=0.8)
    return H.figure_tag(made, "confusion matrix")


def _tta(metrics: dict) -> str:
    views = metrics["cv_by_view"]
    kept = set(metrics.get("tta", []))
    made = H.figure(max(4.0, 1.2 + 0.6 * len(views)), 3.0)
    axes = made.add_subplot()
    names = list(views)
    colours = ["#4c72b0" if v in kept else "#bbbbbb" for v in names]
    axes.bar(range(len(names)), [views[v] for v in names], color=colours)
    axes.axhline(metrics["cv"], color="black", ls=":", label=f"CV without TTA {metrics['cv']:.5f}")
    axes.axhline(metrics["cv_tta"], color="#c44e52", label=f"CV with TTA {metrics['cv_tta']:.5f}")
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    limits = zoomed_limits(np.array([*views.values(), metrics["cv"], metrics["cv_tta"]]))
    if limits:
        axes.set_ylim(*limits)
    axes.set(ylabel=f"OOF {metrics['metric']}", title="each view alone (blue: kept)")
    axes.legend(fontsize=7)
    rows = [(H.escape(v), f"{views[v]:.5f}", "kept" if v in kept else "dropped") for v in names]
    note = (
        f"<p>Views {'chosen on OOF' if metrics.get('tta_auto') else 'as configured'}, merged by "
        f"{H.escape(metrics.get('merge', 'mean'))}; folds merged by "
        f"{H.escape(metrics.get('fold_merge', 'prob'))}. CV {metrics['cv']:.5f} → with TTA "
        f"{metrics['cv_tta']:.5f}.</p>"
    )
    return note + H.figure_tag(made, "TTA views") + H.table(["view", "OOF", ""], rows)


def _gallery(oof: pd.DataFrame, targets: np.ndarray, task, paths: np.ndarray) -> list[str]:
    errors = label_errors(oof, targets, task)
    if errors.empty:
        return []
    position = {i: k for k, i in enumerate(oof["id"])}
    cells = []
    for row in errors.itertuples():
        thumb = H.thumbnail_tag(str(paths[position[row.id]]), str(row.id))
        cells.append(
            f"<figure>{thumb}<figcaption>{H.escape(row.id)}<br>label {H.escape(row.label)} "
            f"(p {row.p_label:.2f})<br>predicted {H.escape(row.predicted)} "
            f"(p {row.confidence:.2f})</figcaption></figure>"
        )
    return [
        "<h2>Likely label errors</h2>",
        "<p>Out-of-fold predictions that disagree with the label, sorted by the probability of "
        "the predicted class, highest first. Check these images before trusting the label.</p>",
        f'<div class="grid">{"".join(cells)}</div>',
    ]


# ------------------------------------------------------------------------------- runs overview


def write_runs_overview(competition: Competition) -> dict:
    """runs/cv_vs_lb.png (CV against public leaderboard score, or CV per run before any
    submission) and runs/index.html (the plot and the ledger, each run linked to its report)."""
    frame = list_runs(competition)
    out_dir = competition.runs_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    png = _cv_vs_lb_png(frame)
    with atomic_open(out_dir / RUNS_PLOT, "wb") as file:
        file.write(png)
    rows = []
    for row in frame.itertuples():
        report = out_dir / row.run / "report.html"
        name = H.escape(row.run)
        link = f'<a href="{name}/report.html">{name}</a>' if report.exists() else name
        rows.append(
            (
                link,
                H.escape(row.model),
                H.escape(row.metric),
                _num(row.cv),
                _num(row.cv_std),
                _num(getattr(row, "public", None)),
                int(row.submissions),
            )
        )
    scored = int(frame["public"].notna().sum()) if not frame.empty else 0
    body = [
        f"<h1>{H.escape(competition.name)}: runs</h1>",
        f'<p class="meta">{len(frame)} run(s), {scored} with a leaderboard score</p>',
        "<h2>CV against the leaderboard</h2>",
        H.img_tag(png, "CV against public leaderboard score"),
        "<h2>The ledger</h2>",
        H.table(["run", "model", "metric", "CV", "± std", "public LB", "submissions"], rows),
    ]
    write_text(out_dir / RUNS_PAGE, H.page(f"{competition.name} runs", "\n".join(body)))
    return {
        "plot": str(out_dir / RUNS_PLOT),
        "page": str(out_dir / RUNS_PAGE),
        "runs": len(frame),
        "scored": scored,
    }


def _num(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.5f}"


def _cv_vs_lb_png(frame: pd.DataFrame) -> bytes:
    made = H.figure(6.5, 4.5)
    axes = made.add_subplot()
    scored = frame[frame["public"].notna()] if not frame.empty else frame
    if len(scored):
        axes.scatter(scored["cv"], scored["public"], color="#4c72b0", zorder=3)
        for row in scored.itertuples():
            axes.annotate(
                row.run, (row.cv, row.public), fontsize=8, xytext=(4, 3), textcoords="offset points"
            )
        low = float(min(scored["cv"].min(), scored["public"].min()))
        high = float(max(scored["cv"].max(), scored["public"].max()))
        pad = max((high - low) * 0.1, 1e-3)
        axes.plot(
            [low - pad, high + pad], [low - pad, high + pad], color="#999", ls=":", label="LB = CV"
        )
        title = "CV against public LB, one point per run"
        if len(scored) >= 3 and scored["cv"].std() > 0 and scored["public"].std() > 0:
            title += f" (Pearson r {np.corrcoef(scored['cv'], scored['public'])[0, 1]:.2f})"
        axes.set(
            xlabel=f"CV ({scored['metric'].iloc[0]})", ylabel="public leaderboard", title=title
        )
        axes.legend(fontsize=8)
    elif len(frame):
        ordered = frame.iloc[::-1]
        axes.barh(ordered["run"], ordered["cv"], xerr=ordered["cv_std"].fillna(0), color="#4c72b0")
        limits = zoomed_limits(frame["cv"].to_numpy())
        if limits:
            axes.set_xlim(limits[0], limits[1] + (limits[1] - limits[0]) * 0.1)
        axes.set(xlabel="CV", title="CV per run (no leaderboard score yet: kit submit)")
    else:
        axes.text(0.5, 0.5, "no runs yet: kit train", ha="center", va="center")
        axes.set_axis_off()
    axes.grid(alpha=0.3)
    return H.figure_png(made)
