import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.competition import Competition
from kit.data.download import download
from kit.data.examples import build_digits
from kit.data.folds import make_folds, read_folds
from kit.data.layout import class_list, read_test_items, read_train_items
from kit.errors import DataError, KitError
from kit.platforms.local import LocalLeaderboard


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_digits_are_built_deterministically_in_a_kaggle_layout(tmp_path):
    first = build_digits(tmp_path / "a")
    second = build_digits(tmp_path / "b")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    pd.testing.assert_frame_equal(first, second)
    train = pd.read_csv(tmp_path / "a" / "train.csv", dtype={"id": str})
    sample = pd.read_csv(tmp_path / "a" / "sample_submission.csv", dtype={"id": str})
    assert (len(train), len(sample)) == (1437, 360)
    assert list(train.columns) == ["id", "label"] and list(sample.columns) == ["id", "label"]
    assert set(train["id"]).isdisjoint(sample["id"])
    assert len(list((tmp_path / "a" / "train").glob("*.png"))) == 1437
    assert len(list((tmp_path / "a" / "test").glob("*.png"))) == 360
    # stratified: every class keeps about its share of the test set
    assert (first["target"].value_counts() >= 34).all()
    assert set(first["usage"]) == {"Public", "Private"}
    assert set(first["id"]) == set(sample["id"])


def test_download_registers_the_answer_key_outside_the_competition(digits, kit_home):
    board = LocalLeaderboard()
    assert board.has("digits")
    assert board.path.is_relative_to(kit_home)
    assert not board.path.is_relative_to(digits.root)
    # nothing under the competition folder holds the test labels
    files = [p for p in digits.root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".sqlite", ".db")]
    assert download(digits, limit=150)["skipped"] is True


def test_tables_follow_the_config(digits):
    train = read_train_items(digits)
    assert list(train.columns) == ["id", "path", "target"]
    assert len(train) == 120 and all(Path(p).exists() for p in train["path"])
    assert class_list(train) == list(range(10))
    test = read_test_items(digits)
    sample = pd.read_csv(digits.root / "data" / "sample_submission.csv", dtype={"id": str})
    assert test["id"].tolist() == sample["id"].tolist()


def test_missing_data_says_to_download(tmp_path):
    from kit.scaffold import new_competition

    competition = new_competition("empty", tmp_path, example="digits")
    with pytest.raises(DataError, match="run `kit download"):
        read_train_items(competition)


def test_missing_columns_and_files_are_named(digits):
    train_csv = digits.root / "data" / "train.csv"
    table = pd.read_csv(train_csv, dtype={"id": str})
    table.rename(columns={"label": "digit"}).to_csv(train_csv, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) label.*data.target_column"):
        read_train_items(digits)
    table.to_csv(train_csv, index=False)
    Path(read_train_items(digits)["path"][0]).unlink()
    with pytest.raises(DataError, match=r"1 id\(s\) match no file.*as <id>\.png, e\.g\. "):
        read_train_items(digits)


def test_folds_are_stratified_written_once_and_forced(digits):
    folds = make_folds(digits)
    assert folds["fold"].nunique() == 5
    per_fold = pd.crosstab(folds["fold"], folds["target"])
    assert (per_fold.max() - per_fold.min() <= 1).all()  # each class spread evenly
    assert read_folds(digits)["id"].tolist() == folds["id"].tolist()
    with pytest.raises(KitError, match="--force"):
        make_folds(digits)
    again = make_folds(digits, force=True)
    assert again["fold"].tolist() == folds["fold"].tolist()  # same seed, same split


def test_folds_refuse_classes_smaller_than_k(digits):
    competition = Competition.load(digits.root, ["folds.n_splits=20"])
    with pytest.raises(DataError, match=r"fewer than folds.n_splits = 20"):
        make_folds(competition)
    assert not competition.folds_csv.exists()


def test_images_decode_any_mode_to_rgb(tmp_path):
    from PIL import Image

    from kit.data.images import load_rgb

    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(gray.astype(np.uint16) * 256).save(tmp_path / "d.png")
    Image.new("RGBA", (4, 4), (10, 20, 30, 128)).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "g.png").shape == (4, 4, 3)
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.png")[..., 1], gray)
    np.testing.assert_allclose(load_rgb(tmp_path / "d.png")[..., 0], gray, atol=1)
    assert load_rgb(tmp_path / "a.png")[0, 0].tolist() == [10, 20, 30]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="bad.png: cannot decode"):
        load_rgb(tmp_path / "bad.png")
