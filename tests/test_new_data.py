"""kit new NAME --data PATH: data already on disk is brought in and [data] is proposed from it."""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from kit.cli import cli
from kit.competition import Competition
from kit.data.folds import make_folds
from kit.data.layout import read_test_items, read_train_items
from kit.errors import ConfigError, DataError
from kit.scaffold import new_competition


def _images(folder, names, ext=".jpg", seed=0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            folder / f"{name}{ext}"
        )


@pytest.fixture
def aptos_like(tmp_path):
    """An APTOS-like download: ids without extension, grades 0-4, a patient column."""
    source = tmp_path / "download"
    ids = [f"img{i:03d}" for i in range(40)]
    _images(source / "train_images", ids)
    pd.DataFrame(
        {
            "id_code": ids,
            "diagnosis": [i % 5 for i in range(40)],
            "patient_id": [f"p{i // 2}" for i in range(40)],
        }  # fmt: skip
    ).to_csv(source / "train.csv", index=False)
    test_ids = [f"t{i:02d}" for i in range(10)]
    _images(source / "test_images", test_ids, seed=1)
    pd.DataFrame({"id_code": test_ids, "diagnosis": 0}).to_csv(
        source / "sample_submission.csv", index=False
    )
    return source


def test_a_csv_layout_is_inferred_written_and_loads(aptos_like, tmp_path):
    done = CliRunner().invoke(
        cli, ["new", "aptos", "--parent", str(tmp_path / "c"), "--data", str(aptos_like)]
    )
    assert done.exit_code == 0, done.output
    for line in ("data.layout = 'csv'", "data.id_column = 'id_code'",
                 "data.target_column = 'diagnosis'", "data.image_ext = '.jpg'",
                 "data.train_dir = 'data/train_images'", "data.test_dir = 'data/test_images'",
                 "submission.format = 'class_index'", "confirm", "folds.group_column",
                 "next: kit eda"):  # fmt: skip
        assert line in done.output, line
    assert "kit download" not in done.output
    competition = Competition.load(tmp_path / "c" / "aptos")
    data = competition.config.data
    assert (data.train_csv, data.id_column, data.target_column) == (
        "data/train.csv",
        "id_code",
        "diagnosis",
    )
    assert competition.config.submission.id_column == "id_code"
    items = read_train_items(competition)
    assert len(items) == 40 and sorted(items["target"].unique()) == [0, 1, 2, 3, 4]
    assert len(read_test_items(competition)) == 10
    assert len(make_folds(competition)) == 40
    text = (competition.root / "kit.toml").read_text()
    assert re.search(r'^id_column = "id_code" +# column of train_csv', text, re.M)  # comment kept
    assert (competition.root / "data" / "train_images").is_dir()  # a copy, not a link
    assert not (competition.root / "data").is_symlink()


def test_folder_per_class_from_a_zip_with_one_top_folder(tmp_path):
    source = tmp_path / "course"
    _images(source / "train" / "cat", ["a", "b", "c"], ext=".png")
    _images(source / "train" / "dog", ["d", "e", "f"], ext=".png")
    _images(source / "test", ["x", "y"], ext=".png")
    pd.DataFrame({"file": ["x.png", "y.png"], "species": ["cat", "cat"]}).to_csv(
        source / "sample_submission.csv", index=False
    )
    archive = tmp_path / "course.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in source.rglob("*"):
            zipped.write(path, path.relative_to(tmp_path))  # course/train/cat/a.png ...
    competition = new_competition("course", tmp_path / "c", data=archive)
    config = competition.config
    assert config.data.layout == "folder_per_class" and config.data.train_dir == "data/train"
    assert config.submission.format == "class_name"
    assert (config.submission.id_column, config.submission.target_column) == ("file", "species")
    items = read_train_items(competition)
    assert sorted(items["target"].unique()) == ["cat", "dog"]
    assert read_test_items(competition)["id"].tolist() == ["x.png", "y.png"]


def test_multilabel_columns_and_a_linked_folder(tmp_path):
    source = tmp_path / "chest"
    ids = [f"s{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (12, 3))
    frame = pd.DataFrame(labels, columns=["ett", "ngt", "cvc"])
    frame.insert(0, "StudyInstanceUID", ids)
    _images(source / "train", ids)
    frame.to_csv(source / "train.csv", index=False)
    _images(source / "test", ["q1", "q2"])
    pd.DataFrame({"StudyInstanceUID": ["q1", "q2"], "ett": 0.5, "ngt": 0.5, "cvc": 0.5}).to_csv(
        source / "sample_submission.csv", index=False
    )
    competition = new_competition("chest", tmp_path / "c", data=source, link=True)
    assert (competition.root / "data").is_symlink()
    assert os.path.samefile(competition.root / "data", source)
    config = competition.config
    assert config.data.target_columns == ["ett", "ngt", "cvc"]
    assert config.task.type == "multilabel" and config.submission.format == "probabilities"
    assert len(read_train_items(competition)) == 12


def test_unusable_data_and_option_clashes_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no folder of images"):
        new_competition("x", tmp_path / "c", data=empty)
    assert not (tmp_path / "c" / "x").exists()  # nothing half-made
    with pytest.raises(ConfigError, match="exclude each other"):
        new_competition("y", tmp_path / "c", data=empty, example="digits")
    done = CliRunner().invoke(cli, ["new", "z", "--parent", str(tmp_path / "c"), "--link"])
    assert done.exit_code == 2 and "--link goes with --data" in done.output


def test_nested_train_and_test_folders_are_not_taken_for_classes(tmp_path):
    source = tmp_path / "nested"
    ids = [f"n{i}" for i in range(10)]
    _images(source / "images" / "train", ids, ext=".png")
    _images(source / "images" / "test", ["u1", "u2"], ext=".png")
    pd.DataFrame({"image": ids, "kind": ["a", "b"] * 5}).to_csv(source / "labels.csv", index=False)
    pd.DataFrame({"image": ["u1", "u2"], "kind": ["a", "a"]}).to_csv(
        source / "sample_submission.csv", index=False
    )
    config = new_competition("nested", tmp_path / "c", data=source).config
    assert (config.data.train_dir, config.data.test_dir) == (
        "data/images/train",
        "data/images/test",
    )
    assert (config.data.layout, config.data.train_csv) == ("csv", "data/labels.csv")
    assert (config.data.id_column, config.data.target_column) == ("image", "kind")
