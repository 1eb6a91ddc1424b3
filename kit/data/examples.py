"""The bundled offline competition: scikit-learn's 1,797 handwritten digits in a Kaggle layout.

Everything is derived with fixed seeds, so every machine builds byte-identical data.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kit.errors import KitError
from kit.fileio import write_csv, write_json

EXAMPLES = ("digits",)  # what `kit new --example` and `source = "example:NAME"` accept
TEST_FRACTION = 0.2  # 360 of 1,797 images become the hidden test set
PUBLIC_FRACTION = 0.5  # share of the test set scored on the public leaderboard
SPLIT_SEED = 2024  # fixes the train/test split and the public/private split
UPSCALE = 255 / 16  # load_digits() holds intensities 0..16; PNGs hold 0..255


def build_digits(data_dir: Path, *, limit: int | None = None) -> pd.DataFrame:
    """Write train.csv, train/, test/, sample_submission.csv under data_dir; return the answer key.

    limit keeps the first `limit` images of a stratified order (for fast tests).
    """
    digits = load_digits()
    images = np.rint(digits.images * UPSCALE).astype(np.uint8)
    labels = digits.target.astype(int)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    classes = len(np.unique(labels))
    smallest = math.ceil(classes / TEST_FRACTION)  # the hidden test set holds every class
    if limit is not None and not smallest <= limit:
        raise KitError(
            f"--limit {limit}: the digits example needs at least {smallest} images ({classes} "
            f"classes, {TEST_FRACTION:.0%} of the images held out as the test set); "
            f"give --limit {smallest} or more"
        )
    if limit is not None:
        # round-robin over classes so a small limit still holds every class
        by_class = [order[labels[order] == c] for c in range(10)]
        order = np.array([i for group in zip(*by_class, strict=False) for i in group][:limit])
    train_idx, test_idx = train_test_split(
        order, test_size=TEST_FRACTION, stratify=labels[order], random_state=SPLIT_SEED
    )
    # ids carry no label and no original index: a hash of the position in the fixed order
    ids = {i: hashlib.sha1(f"digits-{i}".encode()).hexdigest()[:10] for i in order}

    staging = data_dir.with_name(data_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    for split, indices in (("train", train_idx), ("test", test_idx)):
        (staging / split).mkdir(parents=True)
        for i in indices:
            Image.fromarray(images[i]).save(staging / split / f"{ids[i]}.png")
    train = pd.DataFrame({"id": [ids[i] for i in train_idx], "label": labels[train_idx]})
    write_csv(staging / "train.csv", train)
    test_ids = [ids[i] for i in sorted(test_idx, key=lambda i: ids[i])]
    write_csv(staging / "sample_submission.csv", pd.DataFrame({"id": test_ids, "label": 0}))
    write_json(
        staging / "DATA.json",
        {
            "source": "sklearn.datasets.load_digits",
            "train": len(train_idx),
            "test": len(test_idx),
            "limit": limit,
        },
    )
    shutil.rmtree(data_dir, ignore_errors=True)
    staging.rename(data_dir)

    answer = pd.DataFrame({"id": [ids[i] for i in test_idx], "target": labels[test_idx]})
    answer = answer.sort_values("id", ignore_index=True)
    public = np.random.default_rng(SPLIT_SEED + 1).random(len(answer)) < PUBLIC_FRACTION
    answer["usage"] = np.where(public, "Public", "Private")
    return answer
