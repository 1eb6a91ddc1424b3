"""Preprocessing, the cache, augmentation order and `kit bench data` on real files."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kit.cli import cli
from kit.config import Config
from kit.data.cache import cache_key, create_image_source
from kit.data.dataset import ImageDataset
from kit.data.images import crop_box
from kit.data.layout import read_train_items
from kit.data.transforms import SlowPipelineWarning, create_transform, slow_order


def test_bbox_crop_clips_to_the_image():
    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert crop_box(image, (2, 1, 12, 6)).shape == (5, 10, 3)
    assert (crop_box(image, (2, 1, 12, 6)) == image[1:6, 2:12]).all()
    assert crop_box(image, (-5, -5, 100, 100)).shape == image.shape
    assert crop_box(image, (5, 5, 5, 5)).shape == image.shape  # an empty box keeps the image


def test_cache_is_keyed_by_the_preprocessing_and_skips_the_decode(tmp_path, digits):
    config = Config()
    config.data.cache = True
    config.data.preprocess = [{"name": "CLAHE", "p": 1.0}]
    items = read_train_items(digits)
    path = items["path"][0]
    source = create_image_source(config, digits.root, items)
    first = source(path)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    files = list((digits.root / "cache" / cache_key(config)).rglob("*.u8"))
    assert len(files) == 1
    # a cached entry is read back as stored, without decoding the image again
    files[0].write_bytes(np.full((32, 32, 3), 7, np.uint8).tobytes())
    assert (source(path) == 7).all()
    other = Config()
    other.data.cache = True
    assert cache_key(other) != cache_key(config)  # another preprocessing, another folder
    # a changed image is a new entry
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    assert not (source(path) == 7).all()


def test_dataset_uses_the_source_for_bbox_crops(tmp_path):
    path = tmp_path / "a.png"
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[10:20, 10:30] = 255
    Image.fromarray(pixels).save(path)
    config = Config()
    config.data.bbox_columns = ["x0", "y0", "x1", "y1"]
    import pandas as pd

    items = pd.DataFrame({"path": [str(path)], "x0": [10], "y0": [10], "x1": [30], "y1": [20]})
    source = create_image_source(config, None, items)
    dataset = ImageDataset([str(path)], None, create_transform([], 8), source)
    tensor, _ = dataset[0]
    assert tensor.shape == (3, 8, 8) and int(tensor.min()) == 255  # only the box remains


def test_heavy_ops_before_a_downscale_warn():
    specs = [{"name": "CLAHE", "p": 1.0}, {"name": "RandomResizedCrop", "size": [16, 16]}]
    assert "CLAHE" in slow_order(specs, "augment.train")
    with pytest.warns(SlowPipelineWarning, match="move RandomResizedCrop first"):
        transform = create_transform(specs, 16, "augment.train")
    image = np.zeros((64, 48, 3), np.uint8)
    assert transform(image=image)["image"].shape == (16, 16, 3)
    assert slow_order(list(reversed(specs))) is None
    # the default pipeline resizes first, so nothing runs at full resolution
    steps = create_transform([{"name": "CLAHE", "p": 1.0}], 16).transforms
    assert type(steps[0]).__name__ == "Resize"


def test_bench_data_prints_a_table_and_writes_the_recommendation(digits):
    from kit.competition import Competition
    from kit.data.bench import resolve_workers

    result = CliRunner().invoke(
        cli,
        ["bench", "data", "-C", str(digits.root), "--workers", "0,1", "--batch-sizes", "16",
         "--batches", "2", "--write"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "decode" in result.output and "img/s" in result.output
    assert "recommended: train.num_workers = " in result.output
    written = int(result.output.split("recommended: train.num_workers = ")[1].split()[0])
    # "auto" (the template's value) now reads this machine's measurement; kit.toml is unchanged
    text = (digits.root / "kit.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("num_workers"))
    assert line.split("=")[1].split("#")[0].strip() == '"auto"'
    import torch

    reloaded = Competition.load(digits.root)
    assert resolve_workers(reloaded.config, reloaded.root, torch.device("cpu")) == (
        written, "measured by kit bench data")  # fmt: skip
    # a kit.toml that pins a number gets the measured one, its comment kept
    pinned = text.replace(line, line.replace('"auto"', "3"))
    (digits.root / "kit.toml").write_text(pinned)
    result = CliRunner().invoke(
        cli,
        ["bench", "data", "-C", str(digits.root), "--workers", "0", "--batch-sizes", "16",
         "--batches", "1", "--write"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(x for x in (digits.root / "kit.toml").read_text().splitlines()
                if x.startswith("num_workers"))  # fmt: skip
    assert line.split("=")[1].split("#")[0].strip() == "0"
    assert "# DataLoader workers" in line  # the comment survives
