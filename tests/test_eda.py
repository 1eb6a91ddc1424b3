"""write_eda_report on a tiny real image tree with every kind of image and fault it must report."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.eda import write_eda_report
from kit.errors import DataError

EVIL_ID = '<img src="http://x/y.png">&'


def _save(path: Path, array: np.ndarray, **options) -> None:
    # PIL picks the mode from the array: 2-D uint8 -> L, 3 channels -> RGB, 4 -> RGBA.
    Image.fromarray(array).save(path, **options)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """items plus the RGB uint8 array training should see for each readable file, by id."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "train"
    folder.mkdir()
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    deep = rng.integers(0, 60000, (32, 32), dtype=np.uint16)
    photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    copy = rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)

    _save(folder / "rgb.png", rgb)
    _save(folder / "gray.png", gray)
    _save(folder / "rgba.png", rgba)
    _save(folder / "deep.png", deep)  # 2-D uint16 -> a 16-bit PNG that opens as I;16
    _save(folder / "photo.jpg", photo, quality=90)
    _save(folder / "copy1.png", copy)
    (folder / "copy2.png").write_bytes((folder / "copy1.png").read_bytes())
    whole = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(whole, "PNG")
    (folder / "broken.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])

    with Image.open(folder / "photo.jpg") as decoded_photo:
        photo_seen = np.asarray(decoded_photo.convert("RGB"))
    deep_seen = np.clip(deep.astype(np.float32) / 65535.0 * 255.0, 0, 255).astype(np.uint8)
    expected = {
        EVIL_ID: rgb,
        "gray": np.repeat(gray[..., None], 3, axis=2),
        "rgba": rgba[..., :3],
        "deep": np.repeat(deep_seen[..., None], 3, axis=2),
        "photo": photo_seen,
        "copy1": copy,
        "copy2": copy,
    }
    rows = [
        (EVIL_ID, "rgb.png", "cat", 0),
        ("gray", "gray.png", "cat", 1),
        ("rgba", "rgba.png", "dog", 0),
        ("deep", "deep.png", "dog", 1),
        ("photo", "photo.jpg", "bird", 0),
        ("copy1", "copy1.png", "cat", 1),
        ("copy2", "copy2.png", "dog", 0),
        ("broken", "broken.png", "bird", 1),
    ]
    items = pd.DataFrame(
        [(i, str(folder / name), target, fold) for i, name, target, fold in rows],
        columns=["id", "path", "target", "fold"],
    )
    return items, expected


def _mean_std(arrays) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate([a.reshape(-1, 3) for a in arrays]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_report_numbers(tree, tmp_path):
    items, expected = tree
    summary = write_eda_report(items, tmp_path / "report.html", classes=["bird", "cat", "dog"])

    assert summary["n_images"] == 8 and summary["n_classes"] == 3
    assert summary["class_counts"] == {"bird": 2, "cat": 3, "dog": 3}
    assert summary["modes"] == {"RGB": 4, "L": 1, "RGBA": 1, "I;16": 1}
    assert summary["formats"] == {"PNG": 6, "JPEG": 1}
    assert summary["sizes"]["width"] == {"min": 16, "median": 20.0, "max": 32}
    assert summary["sizes"]["height"] == {"min": 16, "median": 18.0, "max": 32}
    assert [c["path"] for c in summary["corrupt"]] == [items.loc[7, "path"]]
    assert summary["duplicates"] == [
        {"ids": ["copy1", "copy2"], "targets": ["cat", "dog"], "labels_disagree": True}
    ]
    mean, std = _mean_std(expected.values())
    np.testing.assert_allclose(summary["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(summary["std"], std, atol=1e-6)


def test_statistics_match_what_training_decodes(tree, tmp_path):
    images = pytest.importorskip("kit.data.images")
    items, _ = tree
    summary = write_eda_report(items, tmp_path / "report.html", samples_per_class=0)
    readable = items[items["id"] != "broken"]
    mean, std = _mean_std(images.load_rgb(p) for p in readable["path"])
    np.testing.assert_allclose(summary["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(summary["std"], std, atol=1e-6)


def test_report_html_is_self_contained_and_names_the_faults(tree, tmp_path):
    items, _ = tree
    out = tmp_path / "out" / "report.html"
    write_eda_report(items, out, classes=["bird", "cat", "dog", "fish"], title="Pets <3")
    page = out.read_text(encoding="utf-8")

    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    # class, fold and size plots, plus one thumbnail per readable image
    assert page.count('class="plot" alt=') == 3
    assert page.count("data:image/png;base64,") == 3 + 7
    assert "<title>Pets &lt;3 — EDA</title>" in page
    assert EVIL_ID not in page and "&lt;img src=&quot;http://x/y.png&quot;&gt;&amp;" in page
    assert items.loc[7, "path"] in page and "broken" in page
    assert "copy1, copy2" in page and "disagree" in page
    assert "1 class(es) have no images: fish" in page
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def test_no_fold_column_means_no_fold_plot(tree, tmp_path):
    items, _ = tree
    out = tmp_path / "report.html"
    write_eda_report(items.drop(columns="fold"), out, samples_per_class=0)
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and 'id="folds"' not in page


def test_max_images_decodes_a_fixed_subset_but_hashes_everything(tree, tmp_path):
    items, _ = tree
    first = write_eda_report(items, tmp_path / "a.html", max_images=3)
    shuffled = items.sample(frac=1.0, random_state=1)
    second = write_eda_report(shuffled, tmp_path / "b.html", max_images=3)
    assert first["n_decoded"] == second["n_decoded"] == 3
    assert first["mean"] == second["mean"] and first["modes"] == second["modes"]
    assert len(first["duplicates"]) == 1
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "cover 3 of 8 files" in page and 1 <= page.count("<figure>") <= 3


def test_missing_file_is_listed_and_multi_label_rows_count_per_class(tree, tmp_path):
    items, _ = tree
    items = items.astype({"target": object})
    items.at[0, "target"] = ["cat", "dog"]
    gone = str(tmp_path / "train" / "gone.png")
    items = pd.concat([items, pd.DataFrame([("gone", gone, "cat", 0)], columns=items.columns)])
    summary = write_eda_report(items, tmp_path / "report.html", samples_per_class=1)
    assert summary["class_counts"] == {"bird": 2, "cat": 4, "dog": 4}
    assert {"path": gone, "error": "cannot read: No such file or directory"} in summary["corrupt"]


def test_rewrite_replaces_the_report(tree, tmp_path):
    items, _ = tree
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")
    write_eda_report(items.iloc[:2], out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_items_without_target_column_is_a_data_error(tree, tmp_path):
    items, _ = tree
    with pytest.raises(DataError, match="target"):
        write_eda_report(items.drop(columns="target"), tmp_path / "report.html")
