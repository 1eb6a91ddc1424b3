"""kit drift (adversarial validation, train-test duplicates) and duplicate grouping in kit folds,
on real images in a tiny digits competition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from browser import assert_plot_drawn, needs_chromium, render
from click.testing import CliRunner
from PIL import Image

from kit.cli import cli
from kit.competition import Competition
from kit.data.folds import check_folds, make_folds
from kit.workbench.drift import check_drift, rank_auc


def _invert(path) -> None:
    with Image.open(path) as image:
        inverted = 255 - np.asarray(image.convert("L"))
    Image.fromarray(inverted).save(path)


def test_rank_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + positive * 0.3, 1)  # ties included
    assert rank_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores))


def test_no_drift_between_random_halves_of_one_set(digits):
    result = check_drift(digits, n_splits=3)
    assert result["auc_low"] < 0.5 < result["auc_high"]
    assert result["verdict"] == "none" and result["duplicates"] == []
    assert result["auc_low"] <= result["auc"] <= result["auc_high"]
    scores = pd.read_csv(result["train_scores"], dtype={"id": str})
    assert len(scores) == 120 and scores["p_test"].is_monotonic_decreasing


def test_a_shifted_test_set_is_found_with_its_test_like_training_images(digits):
    test_dir, train_dir = digits.root / "data" / "test", digits.root / "data" / "train"
    for path in test_dir.glob("*.png"):
        _invert(path)  # the test set is drawn white on black, the training set black on white
    train_ids = pd.read_csv(digits.root / "data" / "train.csv", dtype={"id": str})["id"]
    like_test = set(train_ids.iloc[:6])
    for image_id in like_test:
        _invert(train_dir / f"{image_id}.png")
    leaked = train_ids.iloc[10]
    sample = pd.read_csv(digits.root / "data" / "sample_submission.csv", dtype={"id": str})
    (test_dir / f"{sample['id'].iloc[0]}.png").write_bytes(
        (train_dir / f"{leaked}.png").read_bytes()
    )

    result = check_drift(digits, n_splits=3)
    assert result["verdict"] == "drift" and result["auc_low"] > 0.8
    assert "hold-out fold" in result["suggestion"]
    top = result["scores"]["id"].head(len(like_test)).tolist()
    assert len(like_test & set(top)) >= 4  # the inverted training images rank first
    assert result["duplicates"] == [
        {"test": sample["id"].iloc[0], "train": [leaked], "kind": "bytes"}
    ]
    page = (digits.root / "drift" / "report.html").read_text()
    assert "Most test-like training images" in page and "repeat a training image" in page

    done = CliRunner().invoke(cli, ["drift", "-C", str(digits.root), "--folds", "3"])
    assert done.exit_code == 0, done.output
    assert "adversarial AUC" in done.output and "validate on the" in done.output
    assert "1 test image(s) repeat a training image" in done.output


@needs_chromium
def test_eda_and_drift_pages_show_the_drift_section_in_chromium(digits):
    done = CliRunner().invoke(cli, ["eda", "-C", str(digits.root)])
    assert done.exit_code == 0, done.output
    assert "train vs test: adversarial AUC" in done.output
    eda, drift = digits.root / "eda.html", digits.root / "drift" / "report.html"
    seen = render([eda, drift])
    assert "Train vs test" in seen[eda]["headings"]
    plot = next(i for i in seen[eda]["images"] if i["alt"] == "adversarial validation")
    assert_plot_drawn(plot)
    thumbs = [i for i in seen[drift]["images"] if i["alt"] != "adversarial validation"]
    assert len(thumbs) == 24 and all(i["naturalWidth"] > 0 for i in thumbs)


def _add_copy(competition: Competition, source_id: str, copy_id: str, image=None) -> None:
    """Add copy_id to train.csv with source_id's label, as its byte copy or as `image`."""
    train_dir = competition.root / "data" / "train"
    table = pd.read_csv(competition.root / "data" / "train.csv", dtype={"id": str})
    label = table.loc[table["id"] == source_id, "label"].iloc[0]
    if image is None:
        (train_dir / f"{copy_id}.png").write_bytes((train_dir / f"{source_id}.png").read_bytes())
    else:
        image.save(train_dir / f"{copy_id}.png")
    table = pd.concat([table, pd.DataFrame({"id": [copy_id], "label": [label]})])
    table.to_csv(competition.root / "data" / "train.csv", index=False)


def test_folds_join_byte_copies_with_each_other_and_with_declared_groups(digits):
    table = pd.read_csv(digits.root / "data" / "train.csv", dtype={"id": str})
    first, second = table["id"].iloc[0], table["id"].iloc[1]
    _add_copy(digits, first, "copy-of-first")
    table = pd.read_csv(digits.root / "data" / "train.csv", dtype={"id": str})
    table["patient"] = [f"p{i}" for i in range(len(table))]  # every image its own patient
    table.loc[table["id"] == second, "patient"] = "p0"  # ... except second shares first's
    table.to_csv(digits.root / "data" / "train.csv", index=False)
    competition = Competition.load(digits.root, ['folds.group_column="patient"'])

    folds = make_folds(competition)
    joined = folds.attrs["duplicates"]
    assert joined["byte_identical_joined"] == 1 and joined["declared_groups_merged"] == 1
    fold_of = folds.set_index("id")["fold"]
    assert fold_of[first] == fold_of[second] == fold_of["copy-of-first"]
    group_of = folds.set_index("id")["group"]
    assert group_of["copy-of-first"] == group_of[first] == "p0+p" + str(len(table) - 1)
    assert check_folds(competition) == []  # no leak left for --check to find

    done = CliRunner().invoke(cli, ["folds", "-C", str(digits.root), "--force",
                                    "--set", 'folds.group_column="patient"'])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "joined 1 byte-identical image(s)" in done.output
    assert "1 declared group(s) merged" in done.output


def test_near_duplicates_share_a_fold_only_when_asked(digits):
    table = pd.read_csv(digits.root / "data" / "train.csv", dtype={"id": str})
    first = table["id"].iloc[0]
    with Image.open(digits.root / "data" / "train" / f"{first}.png") as image:
        resaved = image.convert("RGB")  # other bytes (an RGB PNG), the same picture
    _add_copy(digits, first, "resaved", resaved)

    plain = make_folds(digits)
    assert plain.attrs["duplicates"]["byte_identical_joined"] == 0
    assert "group" not in plain.columns  # nothing to group: folds as before
    near = make_folds(Competition.load(digits.root, ["folds.near_duplicates=true"]), force=True)
    assert near.attrs["duplicates"]["near_duplicate_joined"] >= 1
    fold_of = near.set_index("id")["fold"]
    assert fold_of["resaved"] == fold_of[first]
