"""audit_folds on tiny real image trees: a clean split passes, each planted leak is named."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.audit import audit_folds, file_hashes
from kit.errors import DataError


@pytest.fixture
def clean_items(tmp_path: Path) -> pd.DataFrame:
    """8 distinct images, classes a/b, groups of two, 2 folds split by group and stratified."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        path = tmp_path / f"i{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        # Groups pair i0+i1, i2+i3, ...; folds alternate by group, so each fold holds a and b.
        rows.append((f"i{i}", str(path), "ab"[i % 2], f"g{i // 2}", (i // 2) % 2))
    return pd.DataFrame(rows, columns=["id", "path", "target", "group", "fold"])


def _add_row(items: pd.DataFrame, **row) -> pd.DataFrame:
    return pd.concat([items, pd.DataFrame([row])], ignore_index=True)


def test_clean_split_has_no_problems(clean_items):
    assert audit_folds(clean_items) == []
    assert audit_folds(clean_items, n_splits=2) == []


def test_byte_identical_copy_in_another_fold_is_a_leak(clean_items, tmp_path):
    copy = tmp_path / "copy_of_i0.png"
    shutil.copyfile(clean_items.loc[0, "path"], copy)
    items = _add_row(clean_items, id="dup", path=str(copy), target="a", group="g9", fold=1)
    problems = audit_folds(items)
    assert len(problems) == 1
    assert "byte-identical" in problems[0]
    assert "i0 (fold 0)" in problems[0] and "dup (fold 1)" in problems[0]


def test_copy_in_the_same_fold_is_not_a_leak(clean_items, tmp_path):
    copy = tmp_path / "copy_of_i0.png"
    shutil.copyfile(clean_items.loc[0, "path"], copy)
    items = _add_row(clean_items, id="dup", path=str(copy), target="a", group="g0", fold=0)
    assert audit_folds(items) == []


def test_many_leaks_show_a_few_examples_and_a_count(clean_items, tmp_path):
    items = clean_items
    for i in range(5):
        copy = tmp_path / f"copy{i}.png"
        shutil.copyfile(clean_items.loc[i, "path"], copy)
        other_fold = 1 - clean_items.loc[i, "fold"]
        items = _add_row(
            items, id=f"c{i}", path=str(copy), target="ab"[i % 2], group=f"h{i}", fold=other_fold
        )
    (problem,) = audit_folds(items)
    assert problem.startswith("5 set(s) of byte-identical images")
    assert "c2 (fold" in problem and "c3 (fold" not in problem


def test_same_path_in_two_folds_is_reported_once(clean_items):
    row = clean_items.loc[0]
    items = _add_row(clean_items, id="again", path=row["path"], target="a", group="g8", fold=1)
    problems = audit_folds(items)
    assert len(problems) == 1
    assert "listed in more than one fold" in problems[0]
    assert f"{Path(row['path'])} in folds 0, 1" in problems[0]


def test_group_in_two_folds_is_a_leak(clean_items):
    items = clean_items.copy()
    items.loc[2, "group"] = "g0"  # i2 is in fold 1, g0 lives in fold 0
    (problem,) = audit_folds(items)
    assert "1 group(s) span more than one fold" in problem and "g0 in folds 0, 1" in problem


def test_class_missing_from_a_fold(clean_items):
    items = clean_items.copy()
    items.loc[items["id"].isin(["i1", "i5"]), "target"] = "a"  # fold 0 loses its b images
    (problem,) = audit_folds(items)
    assert problem.startswith("fold 0: validation part has no example of class(es) b")


def test_fold_outside_range_and_empty_fold(clean_items):
    assert any("have no rows" in p and "2" in p for p in audit_folds(clean_items, n_splits=3))
    items = clean_items.copy()
    items.loc[7, "fold"] = 2
    problems = audit_folds(items, n_splits=2)
    assert any(p.startswith("fold index(es) 2 outside 0..1") for p in problems)
    items.loc[7, "fold"] = -1
    assert any("-1 outside" in p for p in audit_folds(items))


def test_row_without_fold(clean_items):
    items = clean_items.astype({"fold": float})
    items.loc[3, "fold"] = float("nan")
    problems = audit_folds(items)
    assert problems[0] == "1 row(s) have no integer fold, e.g. ids i3; give every row a fold"


def test_missing_fold_column_is_a_data_error(clean_items):
    with pytest.raises(DataError, match="fold"):
        audit_folds(clean_items.drop(columns="fold"))


def test_file_hashes(clean_items, tmp_path):
    copy = tmp_path / "copy.png"
    shutil.copyfile(clean_items.loc[0, "path"], copy)
    hashes = file_hashes([clean_items.loc[0, "path"], copy, clean_items.loc[1, "path"]])
    expected = hashlib.blake2b(copy.read_bytes(), digest_size=16).hexdigest()
    assert hashes[0] == hashes[1] == expected != hashes[2]
    with pytest.raises(DataError, match="gone.png"):
        file_hashes([tmp_path / "gone.png"])
