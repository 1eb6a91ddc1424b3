"""Leak-proof folds (stratified, grouped, multi-label) and one-line errors for bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from kit.cli import cli
from kit.competition import Competition
from kit.data.folds import iterative_folds, make_folds, read_folds, training_table
from kit.data.layout import read_test_items, read_train_items
from kit.errors import DataError


def save_image(path: Path, value: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((12, 12, 3), value % 256, dtype=np.uint8)
    pixels[value % 12] = 255 - value % 256  # every image differs from every other
    Image.fromarray(pixels).save(path, format=fmt)


def csv_competition(tmp_path: Path, n: int = 24, toml: str = "", **columns) -> Competition:
    """A CSV-layout competition: id,label (+ columns), images data/train/<id>.png."""
    root = tmp_path / "comp"
    ids = [f"img{i:03d}" for i in range(n)]
    for i, name in enumerate(ids):
        save_image(root / "data" / "train" / f"{name}.png", i)
    table = pd.DataFrame({"id": ids, "label": [i % 3 for i in range(n)], **columns})
    table.to_csv(root / "data" / "train.csv", index=False)
    (root / "kit.toml").write_text(f"[folds]\nn_splits = 3\n{toml}")
    return Competition.load(root)


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert all(line.startswith("Error: ") for line in lines)
    assert "Traceback" not in result.output
    return result.output


def test_iterative_stratification_gives_every_fold_its_share_of_every_label():
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 6)) < [0.5, 0.3, 0.1, 0.05, 0.03, 0.02]).astype(int)
    folds = iterative_folds(labels, None, 3, seed=0)
    sizes = np.bincount(folds, minlength=3)
    assert sizes.max() - sizes.min() <= 3
    for label in range(6):
        per_fold = np.array([labels[folds == k, label].sum() for k in range(3)])
        assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)


def test_iterative_stratification_keeps_groups_whole():
    rng = np.random.default_rng(2)
    labels = (rng.random((90, 4)) < 0.3).astype(int)
    groups = pd.Series([f"p{i // 3}" for i in range(90)])
    folds = iterative_folds(labels, groups, 3, seed=0)
    assert pd.Series(folds).groupby(groups).nunique().max() == 1
    assert sorted(set(folds)) == [0, 1, 2]


def test_group_column_keeps_each_group_in_one_fold(tmp_path):
    comp = csv_competition(
        tmp_path, 30, 'group_column = "patient"\n',
        patient=[f"p{i // 2}" for i in range(30)],
    )  # fmt: skip
    folds = make_folds(comp)
    assert folds.groupby("group")["fold"].nunique().max() == 1
    assert folds["fold"].nunique() == 3
    assert list(read_folds(comp).columns) == ["id", "fold", "target", "group"]


def test_group_regex_on_the_path(tmp_path):
    comp = csv_competition(tmp_path, 24, "group_regex = '^img0(\\d)'\n")
    items = read_train_items(comp)
    assert items["group"].nunique() == 3  # img00x, img01x, img02x
    folds = make_folds(comp)
    assert folds.groupby("group")["fold"].nunique().max() == 1


def test_group_regex_that_matches_nothing_is_one_line(tmp_path):
    comp = csv_competition(tmp_path, 24, "group_regex = '^patient_(\\d+)'\n")
    output = cli_error("folds", "-C", str(comp.root))
    assert "folds.group_regex '^patient_(\\\\d+)' matches no file" in output
    assert "img000.png" in output


def test_label_regex_that_matches_nothing_is_one_line(tmp_path):
    root = tmp_path / "comp"
    save_image(root / "data" / "train" / "cat.1.jpg", 1)
    (root / "kit.toml").write_text(
        '[data]\nlayout = "path_regex"\nlabel_regex = "^(?P<label>dog)_"\n'
    )
    output = cli_error("folds", "-C", str(root))
    assert "data.label_regex '^(?P<label>dog)_' matches no file" in output
    assert "cat.1.jpg" in output


def test_a_class_smaller_than_the_folds_is_named(tmp_path):
    comp = csv_competition(tmp_path, 24)
    table = pd.read_csv(comp.root / "data" / "train.csv")
    table.loc[0, "label"] = 7
    table.to_csv(comp.root / "data" / "train.csv", index=False)
    output = cli_error("folds", "-C", str(comp.root))
    assert "class 7 has 1 image(s), fewer than folds.n_splits = 3" in output


def test_missing_columns_name_the_expected_ones(tmp_path):
    comp = csv_competition(tmp_path, 12, '[data]\ntarget_column = "species"\n')
    output = cli_error("folds", "-C", str(comp.root))
    assert "lacks column(s) species (expected id, species; it has id, label)" in output


def test_ids_matching_no_file_show_three_examples(tmp_path):
    comp = csv_competition(tmp_path, 12, '[data]\nimage_ext = ".jpg"\n')
    output = cli_error("folds", "-C", str(comp.root))
    assert "12 id(s) match no file" in output
    assert "img000, img001, img002 (+9 more)" in output
    assert "the folder holds .png files" in output


def test_corrupt_and_truncated_images_are_listed_and_can_be_skipped(tmp_path):
    comp = csv_competition(tmp_path, 24)
    train = comp.root / "data" / "train"
    (train / "img004.png").write_bytes(b"not an image at all")
    save_image(train / "img005.png", 5, fmt="JPEG")  # a JPEG named .png, then cut short
    data = (train / "img005.png").read_bytes()
    (train / "img005.png").write_bytes(data[:-10])  # the header intact, the end marker gone
    make_folds(comp)
    output = cli_error("train", "-C", str(comp.root), "--quiet")
    assert "2 training image(s) cannot be decoded" in output
    assert "img004.png" in output and "img005.png (image file is truncated" in output
    assert "--skip-bad" in output
    skipping = Competition.load(comp.root, ["data.skip_bad=true"])
    table, _ = training_table(skipping)
    assert len(table) == 22 and table.attrs["skipped_bad"] == 2


def test_train_skip_bad_says_how_many(tmp_path):
    comp = csv_competition(tmp_path, 24)
    (comp.root / "data" / "train" / "img004.png").write_bytes(b"\x89PNG broken")
    make_folds(comp)
    result = CliRunner().invoke(
        cli,
        ["train", "-C", str(comp.root), "--quiet", "--skip-bad", "--name", "r", "--folds", "0",
         "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.image_size=16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipping 1 undecodable image(s)" in result.output
    assert "img004.png" in result.output


def test_folds_check_finds_copies_and_shared_groups(tmp_path):
    comp = csv_competition(tmp_path, 24, 'group_column = "patient"\n',
                           patient=[f"p{i // 2}" for i in range(24)])  # fmt: skip
    folds = make_folds(comp)
    assert CliRunner().invoke(cli, ["folds", "-C", str(comp.root), "--check"]).exit_code == 0
    train = comp.root / "data" / "train"
    other = folds.loc[folds["fold"] != folds.set_index("id").loc["img000", "fold"], "id"].iloc[0]
    shutil.copy(train / "img000.png", train / f"{other}.png")  # the same bytes in two folds
    first_fold = int(folds.loc[folds["id"] == "img000", "fold"].iloc[0])
    folds.loc[folds["id"] == "img001", "fold"] = (first_fold + 1) % 3
    folds.to_csv(comp.folds_csv, index=False)  # p0's two images now in two folds
    output = cli_error("folds", "-C", str(comp.root), "--check")
    assert "byte-identical images span more than one fold" in output
    assert "group(s) span more than one fold" in output and "p0" in output


def test_an_undecodable_test_image_is_named_before_prediction(tmp_path):
    comp = csv_competition(tmp_path, 12)
    save_image(comp.root / "data" / "test" / "t1.png", 1)
    (comp.root / "data" / "test" / "t2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    (comp.root / "data" / "sample_submission.csv").write_text("id,label\nt1,0\nt2,0\n")
    with pytest.raises(DataError, match=r"1 test image\(s\) cannot be decoded: t2.png \("):
        read_test_items(comp)
