"""Train-vs-test drift: adversarial validation and train-test duplicates (`kit drift`).

A small model learns to tell training images from test images with k-fold; its out-of-fold AUC
says how far apart the two sets are: about 0.5 when the test set looks like the training set,
well above 0.5 when something (sizes, formats, colour, content) gives test images away. The
training images the model finds most test-like make a validation fold that measures what the
test set will. Test images whose bytes (or perceptual hash, folds.near_duplicates) equal a
training image's are a leak of the answer into training, listed apart.

The model is a gradient-boosted tree ensemble (scikit-learn) on cheap image features: a 8 x 8
colour thumbnail, per-channel mean and std, log width, log height and log file size; it decodes
each image once, on the CPU, so `kit drift` runs before any network is trained.

Artefacts: drift/report.html, drift/summary.json, drift/train_scores.csv (id, p_test, rank).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from kit import html as H
from kit.competition import Competition
from kit.data.audit import file_hashes, near_duplicate_pairs, perceptual_hash
from kit.data.images import to_rgb
from kit.data.layout import read_test_items, read_train_items
from kit.errors import KitError
from kit.fileio import write_csv, write_json, write_text

DRIFT_DIR = "drift"  # under the competition folder
MAX_IMAGES = 2000  # per side: a fixed random sample bounds the decoding work
SHOWN = 24  # most test-like training images shown
BOOTSTRAP = 400  # resamples for the AUC interval
# AUC interval's lower end above this: the sets differ enough to act on
DRIFT_AUC = 0.6
THUMB_SIDE = 8  # px, the colour thumbnail that the model reads


def image_features(path: str) -> np.ndarray:
    """The features of one image file; NaNs when it cannot be decoded (the model copes)."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", (THUMB_SIDE * 4, THUMB_SIDE * 4))
            rgb = to_rgb(image)
    except Exception:  # undecodable: reported by kit eda; here it is only an unknown row
        return np.full(THUMB_SIDE * THUMB_SIDE * 3 + 9, np.nan, dtype=np.float32)
    pixels = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    thumb = np.asarray(
        Image.fromarray(rgb).resize((THUMB_SIDE, THUMB_SIDE), Image.BOX), dtype=np.float32
    )
    return np.concatenate(
        [
            thumb.reshape(-1) / 255.0,
            pixels.mean(axis=0),
            pixels.std(axis=0),
            [math.log(width), math.log(height), math.log1p(size)],
        ]
    ).astype(np.float32)


def features(paths: list[str]) -> np.ndarray:
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(image_features, paths)))


def adversarial_auc(
    x: np.ndarray, is_test: np.ndarray, *, n_splits: int = 5, seed: int = 0
) -> dict:
    """Out-of-fold P(test) of each row, the AUC with its bootstrap 95% interval, fold AUCs.

    The AUC is the mean of the per-fold AUCs: within a fold every score comes from one model.
    Pooling the folds' scores first would mix models whose scores are shifted by their own
    training share of test rows, which biases a no-drift AUC below 0.5. The bootstrap resamples
    rows within each fold.
    """
    smaller = int(min(is_test.sum(), (~is_test).sum()))
    if smaller < n_splits:
        raise KitError(
            f"adversarial validation needs at least {n_splits} training and test images "
            f"(has {smaller} on one side): lower --folds"
        )
    p_test = np.zeros(len(is_test))
    folds = []
    splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    # one OpenMP thread: on a busy machine the trees' spinning threads ran 3x slower than one
    with threadpool_limits(1):
        for train_rows, valid_rows in splitter.split(x, is_test):
            model = HistGradientBoostingClassifier(
                max_iter=60, max_leaf_nodes=15, early_stopping=False, random_state=seed
            )
            model.fit(x[train_rows], is_test[train_rows])
            p_test[valid_rows] = model.predict_proba(x[valid_rows])[:, 1]
            folds.append(valid_rows)
    fold_aucs = [rank_auc(is_test[rows], p_test[rows]) for rows in folds]
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(BOOTSTRAP):
        aucs = []
        for rows in folds:
            drawn = rows[rng.integers(0, len(rows), len(rows))]
            if 0 < is_test[drawn].sum() < len(drawn):
                aucs.append(rank_auc(is_test[drawn], p_test[drawn]))
        if aucs:
            resampled.append(np.mean(aucs))
    low, high = np.quantile(resampled, [0.025, 0.975])
    return {
        "auc": float(np.mean(fold_aucs)),
        "auc_low": float(low),
        "auc_high": float(high),
        "fold_aucs": fold_aucs,
        "p_test": p_test,
    }


def rank_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged: the bootstrap's fast path."""
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_test_duplicates(
    train: pd.DataFrame, test: pd.DataFrame, *, near: bool = False
) -> list[dict]:
    """Test images whose bytes (near: or perceptual hash) match a training image's."""
    found = []
    train_by_hash: dict[str, list[str]] = {}
    for image_id, digest in zip(train["id"], file_hashes(train["path"]), strict=True):
        train_by_hash.setdefault(digest, []).append(str(image_id))
    for image_id, digest in zip(test["id"], file_hashes(test["path"]), strict=True):
        if digest in train_by_hash:
            found.append({"test": str(image_id), "train": train_by_hash[digest], "kind": "bytes"})
    if near:
        exact = {row["test"] for row in found}
        paths = [*train["path"], *test["path"]]
        hashes = [perceptual_hash(p) for p in paths]
        n_train = len(train)
        neighbours: dict[str, list[str]] = {}
        for a, b in near_duplicate_pairs(hashes):
            if a < n_train <= b:  # one training and one test image
                test_id = str(test["id"].iloc[b - n_train])
                if test_id not in exact:
                    neighbours.setdefault(test_id, []).append(str(train["id"].iloc[a]))
        found += [{"test": t, "train": ids, "kind": "near"} for t, ids in neighbours.items()]
    return found


def check_drift(
    competition: Competition,
    *,
    n_splits: int = 5,
    max_images: int | None = MAX_IMAGES,
    near: bool | None = None,
    seed: int = 0,
) -> dict:
    """Adversarial validation + train-test duplicates; writes drift/; returns the summary."""
    train = read_train_items(competition)[["id", "path"]]
    test = read_test_items(competition)[["id", "path"]]
    near = competition.config.folds.near_duplicates if near is None else near
    duplicates = train_test_duplicates(train, test, near=near)
    train_sample = _sample(train, max_images, seed)
    test_sample = _sample(test, max_images, seed)
    x = features([*train_sample["path"], *test_sample["path"]])
    is_test = np.r_[np.zeros(len(train_sample), bool), np.ones(len(test_sample), bool)]
    found = adversarial_auc(x, is_test, n_splits=n_splits, seed=seed)
    scores = train_sample.assign(p_test=found.pop("p_test")[: len(train_sample)])
    scores = scores.sort_values("p_test", ascending=False, kind="stable").reset_index(drop=True)
    scores["rank"] = np.arange(1, len(scores) + 1)
    summary = {
        **found,
        "train_images": len(train_sample),
        "test_images": len(test_sample),
        "train_total": len(train),
        "test_total": len(test),
        "n_splits": n_splits,
        "verdict": verdict(found["auc"], found["auc_low"]),
        "suggestion": suggestion(found["auc_low"], found["auc_high"], len(scores), competition),
        "duplicates": duplicates,
        "differences": _differences(x, is_test),
    }
    out = competition.root / DRIFT_DIR
    write_csv(out / "train_scores.csv", scores[["id", "p_test", "rank"]])
    write_json(out / "summary.json", summary)
    body = f"<h1>{H.escape(competition.name)}: train vs test</h1>\n" + drift_section(
        summary, scores
    )
    write_text(out / "report.html", H.page(f"{competition.name} drift", body))
    return {
        **summary,
        "report": str(out / "report.html"),
        "train_scores": str(out / "train_scores.csv"),
        "scores": scores,
    }


def _sample(items: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(items) <= limit:
        return items.reset_index(drop=True)
    return items.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)


def verdict(auc: float, low: float) -> str:
    if low > DRIFT_AUC:
        return "drift"  # the model tells the sets apart
    if low > 0.5:
        return "slight"
    return "none"


def suggestion(low: float, high: float, n_train: int, competition: Competition) -> str:
    if high < 0.5:  # the split is, if anything, more even than a random one
        return (
            "the test set looks like the training set (AUC below 0.5: no model tells them "
            "apart; the split was likely made to be even): k-fold CV estimates the test score"
        )
    if low <= 0.5:
        return "the test set looks like the training set: k-fold CV estimates the test score"
    share = max(1, n_train // max(competition.config.folds.n_splits, 2))
    return (
        f"the test set differs from the training set (AUC interval above 0.5): validate on the "
        f"{share} most test-like training images (drift/train_scores.csv, highest p_test first) "
        "as a hold-out fold, so CV measures what the test set will; then look at what gives "
        "the test images away (sizes, formats, colour) in the table of differences"
    )


def _differences(x: np.ndarray, is_test: np.ndarray) -> list[dict]:
    names = [
        "mean R",
        "mean G",
        "mean B",
        "std R",
        "std G",
        "std B",
        "log width",
        "log height",
        "log file bytes",
    ]
    summary = x[:, -len(names) :]
    rows = []
    for k, name in enumerate(names):
        a, b = summary[~is_test, k], summary[is_test, k]
        spread = float(np.nanstd(summary[:, k]))
        spread = spread if spread > 1e-6 else 1.0  # a constant feature has no gap
        rows.append(
            {
                "feature": name,
                "train": round(float(np.nanmean(a)), 5),
                "test": round(float(np.nanmean(b)), 5),
                "gap_in_std": round(float((np.nanmean(b) - np.nanmean(a)) / spread), 3),
            }
        )
    return sorted(rows, key=lambda r: -abs(r["gap_in_std"]))


def drift_section(summary: dict, scores: pd.DataFrame) -> str:
    """The drift findings as an HTML fragment (kit drift's page and eda.html's section)."""
    cls = {"drift": "bad", "slight": "", "none": "ok"}[summary["verdict"]]
    folds = ", ".join(f"{v:.3f}" for v in summary["fold_aucs"])
    parts = [
        f'<p class="{cls}">Adversarial validation AUC {summary["auc"]:.3f} '
        f"(95% interval {summary['auc_low']:.3f}–{summary['auc_high']:.3f}; folds {folds}) "
        f"on {summary['train_images']} training and {summary['test_images']} test images. "
        "About 0.5 means a model cannot tell test images from training images.</p>",
        f"<p>{H.escape(summary['suggestion'])}.</p>",
        _score_plot(summary, scores),
        "<h3>Differences (mean over each set; gap in units of the pooled std)</h3>",
        H.table(
            ["feature", "train", "test", "gap"],
            [
                (d["feature"], d["train"], d["test"], d["gap_in_std"])
                for d in summary["differences"]
            ],
        ),
        "<h3>Most test-like training images</h3>",
        '<div class="grid">'
        + "".join(
            f"<figure>{H.thumbnail_tag(row.path, str(row.id))}<figcaption>{H.escape(row.id)}"
            f"<br>p_test {row.p_test:.2f}</figcaption></figure>"
            for row in scores.head(SHOWN).itertuples()
        )
        + "</div>",
    ]
    duplicates = summary["duplicates"]
    parts.append("<h3>Test images that are also training images</h3>")
    if duplicates:
        parts.append(
            f'<p class="bad">{len(duplicates)} test image(s) repeat a training image (the '
            "answer leaks into training; the leaderboard will look better than the model "
            "is):</p>"
            + H.table(
                ["test", "training copies", "match"],
                [
                    (H.escape(d["test"]), H.escape(", ".join(d["train"])), d["kind"])
                    for d in duplicates[:200]
                ],
            )
        )
    else:
        parts.append('<p class="ok">No test image has a training image\'s bytes.</p>')
    return "\n".join(parts)


def _score_plot(summary: dict, scores: pd.DataFrame) -> str:
    made = H.figure(6.0, 2.8)
    axes = made.add_subplot()
    axes.hist(scores["p_test"], bins=30, color="#4c72b0")
    axes.set(
        xlabel="out-of-fold P(test) of the training images",
        ylabel="images",
        title=f"adversarial AUC {summary['auc']:.3f}",
    )
    axes.yaxis.set_major_locator(H.integer_ticks())
    return H.figure_tag(made, "adversarial validation")
