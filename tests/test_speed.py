"""Machine-fitting defaults, reduced decode, device-sized prediction, the file index, progress.

Speed itself is measured in benchmarks/*.py; these tests check that each mechanism does what it
says and gives the same answers as the slow path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kit import device as kit_device
from kit.config import Config
from kit.errors import KitError


def natural_jpeg(path, size: int = 512, seed: int = 0, quality: int = 90) -> None:
    """A photo-like JPEG: smooth shading, edges and texture (not flat noise, not flat colour)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([128 + 90 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    image[size // 4 : size // 2, size // 3 : 2 * size // 3] += 60  # a hard-edged block
    image += rng.normal(0, 6, image.shape)  # sensor-like grain
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path, quality=quality)


# ------------------------------------------------------------------------------- threads, workers


def test_threads_share_the_cores_among_ranks_and_workers(monkeypatch):
    monkeypatch.setattr(kit_device, "usable_cores", lambda: 16)
    monkeypatch.setattr(kit_device, "busy_cores", lambda: 0)
    assert kit_device.intra_op_threads(workers=0) == 16
    assert kit_device.intra_op_threads(workers=3, ranks=2) == 2  # 16 / (2 x 4)
    assert kit_device.intra_op_threads(workers=8, ranks=4) == 1  # never below one
    assert kit_device.intra_op_threads(workers=3, ranks=2, override=5) == 5  # train.threads
    # cores that other processes keep busy are left to them (a shared or loaded machine)
    monkeypatch.setattr(kit_device, "busy_cores", lambda: 12)
    assert kit_device.intra_op_threads(workers=1) == 2  # (16 - 12) / 2
    assert kit_device.intra_op_threads(workers=1, load_aware=False) == 8  # train.deterministic
    monkeypatch.setattr(kit_device, "busy_cores", lambda: 40)
    assert kit_device.intra_op_threads(workers=0) == 1
    assert kit_device.default_workers(torch.device("cuda")) == 8  # cores - 1, at most 8
    assert kit_device.default_workers(torch.device("cpu")) == 0
    from kit.data.bench import worker_sweep

    assert worker_sweep(2) == [0, 1, 2]  # never above the cores (it used to try 4 on 2 cores)
    assert worker_sweep(16) == [0, 1, 2, 4, 8, 16]
    assert worker_sweep(6) == [0, 1, 2, 4, 6]


def test_worker_init_leaves_one_thread_to_opencv_and_torch():
    import cv2

    before_cv2, before_torch = cv2.getNumThreads(), torch.get_num_threads()
    try:
        kit_device.worker_init(0)
        assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
    finally:
        cv2.setNumThreads(before_cv2)
        torch.set_num_threads(before_torch)


def test_auto_workers_come_from_this_machines_measurement(tmp_path):
    from kit.competition import Competition
    from kit.data.bench import resolve_workers, store_measurement

    (tmp_path / "kit.toml").write_text("[train]\nimage_size = 32\n")
    competition = Competition.load(tmp_path)
    cpu = torch.device("cpu")
    assert competition.config.train.num_workers == "auto"
    assert resolve_workers(competition.config, tmp_path, cpu)[0] == 0  # unmeasured CPU default
    store_measurement(competition, {"num_workers": 1, "batch_size": 64, "img_per_s": 9.0}, "cpu")
    assert resolve_workers(competition.config, tmp_path, cpu) == (1, "measured by kit bench data")
    # another pipeline (a new image size) is another measurement
    bigger = Competition.load(tmp_path, ["train.image_size=64"])
    assert resolve_workers(bigger.config, tmp_path, cpu)[0] == 0
    pinned = Competition.load(tmp_path, ["train.num_workers=2"])
    assert resolve_workers(pinned.config, tmp_path, cpu) == (2, "kit.toml")


# ------------------------------------------------------------------------------------ decoding


def test_reduced_jpeg_decode_is_as_close_to_the_reference_as_a_full_decode(tmp_path):
    """The check behind reduced decoding (kit.data.images.REDUCED_FACTORS).

    Reference: full decode, then an area downscale (the most faithful shrink). kit's pipeline
    resizes with albumentations' Resize (bilinear). A reduced decode then Resize must be no
    further from the reference than a full decode then Resize is, and close in absolute terms.
    """
    import cv2

    from kit.data.images import load_rgb, reduction
    from kit.data.transforms import create_transform

    assert reduction(512, 512, 224) == 2 and reduction(512, 512, 128) == 4
    assert reduction(512, 512, 300) == 1 and reduction(4000, 600, 64) == 8
    resize = create_transform([], 224)
    for seed, quality in ((0, 90), (1, 75)):
        path = tmp_path / f"photo{seed}.jpg"
        natural_jpeg(path, seed=seed, quality=quality)
        full = load_rgb(str(path))
        reduced = load_rgb(str(path), 224)
        assert full.shape == (512, 512, 3) and reduced.shape == (256, 256, 3)
        reference = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA).astype(float)
        error_full = np.abs(resize(image=full)["image"] - reference).mean()
        error_reduced = np.abs(resize(image=reduced)["image"] - reference).mean()
        assert error_reduced <= error_full + 0.5, (error_reduced, error_full)
        assert error_reduced < 3.0  # grey levels of 255, on average
    png = tmp_path / "photo.png"
    Image.open(tmp_path / "photo0.jpg").save(png)
    assert load_rgb(str(png), 224).shape == (512, 512, 3)  # only JPEGs have DCT scaling


def test_reduced_decode_only_where_the_image_is_resized_first(tmp_path):
    from kit.data.cache import create_image_source

    config = Config()
    config.train.image_size = 64
    assert create_image_source(config, augment=[]).decode_size == 64
    crop = [{"name": "RandomResizedCrop", "size": [64, 64]}]
    assert create_image_source(config, augment=crop).decode_size == 0  # crops see full pixels
    assert create_image_source(config).decode_size == 0  # the caller did not say
    config.data.preprocess = [{"name": "CLAHE", "p": 1.0}]
    assert create_image_source(config, augment=[]).decode_size == 0  # runs at full resolution
    config.data.preprocess = []
    config.data.cache, config.data.cache_size = True, 96
    assert create_image_source(config, tmp_path, augment=crop).decode_size == 96


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_encoded_cache_reads_back_and_is_smaller_on_disk(tmp_path, fmt):
    from kit.data.cache import create_image_source, disk_bytes

    paths = []
    for seed in range(3):
        paths.append(str(tmp_path / f"{seed}.jpg"))
        natural_jpeg(paths[-1], size=256, seed=seed)
    raw, encoded = Config(), Config()
    for config in (raw, encoded):
        config.data.cache, config.data.cache_size = True, 128
    encoded.data.cache_format = fmt
    raw_source = create_image_source(raw, tmp_path / "a")
    source = create_image_source(encoded, tmp_path / "b")
    assert source.cache_dir != raw_source.cache_dir
    for path in paths:
        first, again, exact = source(path), source(path), raw_source(path)
        assert again.shape == (128, 128, 3) and again.dtype == np.uint8
        assert (first == exact).all()  # the first call returns what it made
        if fmt == "png":
            assert (again == exact).all()  # lossless
        else:
            assert np.abs(again.astype(int) - exact).mean() < 2.0  # q95
    assert 0 < disk_bytes(source.cache_dir) < disk_bytes(raw_source.cache_dir)


# ---------------------------------------------------------------------------------- prediction


class OutOfMemoryAbove(torch.nn.Module):
    """Raises the accelerator's out-of-memory error for passes of more than `limit` images."""

    def __init__(self, model, limit: int):
        super().__init__()
        self.model, self.limit, self.sizes = model, limit, []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.model(x)


def test_prediction_passes_follow_the_budget_and_match_one_large_batch():
    from kit.infer.predict import _forward
    from kit.infer.tta import parse_view
    from kit.task import Task
    from kit.train.model import create_model

    torch.manual_seed(0)
    task = Task("multiclass", tuple(range(10)))
    model = create_model(Config().model, 10).eval()
    x = torch.rand(12, 3, 32, 32)
    views = [parse_view(v) for v in ("identity", "hflip", "shift:1,0", "rot90", "scale:1.1")]
    cpu = torch.device("cpu")
    stats = ((0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        one_pass = _forward(model, x, views, *stats, cpu, False, task,
                            kit_device.PassBudget(cpu, images=1000))  # fmt: skip
        small = kit_device.PassBudget(cpu, images=7)  # a forced small budget: passes split views
        assert _forward(model, x, views, *stats, cpu, False, task, small).shape == (5, 12, 10)
        np.testing.assert_allclose(
            _forward(model, x, views, *stats, cpu, False, task, small), one_pass, atol=1e-5
        )
        # an out-of-memory pass is halved and retried; the budget stays halved afterwards
        flaky = OutOfMemoryAbove(model, limit=10)
        budget = kit_device.PassBudget(cpu, images=60)
        out = _forward(flaky, x, views, *stats, cpu, False, task, budget)
        np.testing.assert_allclose(out, one_pass, atol=1e-5)
        assert budget.images <= 10 and budget.halvings >= 1
        assert max(flaky.sizes[-3:]) <= 10
        with pytest.raises(KitError, match="one image does not fit"):
            _forward(OutOfMemoryAbove(model, 0), x, views, *stats, cpu, False, task,
                     kit_device.PassBudget(cpu, images=4))  # fmt: skip


def test_the_first_accelerator_pass_measures_and_sizes_the_rest():
    budget = kit_device.PassBudget(torch.device("cuda"), memory_bytes=10**9)
    assert budget.images is None and budget.next_size(500) == kit_device.PROBE_IMAGES
    budget.calibrate(8, peak_bytes=8 * 10**7, free_bytes=10**9)  # 80 MB per image
    assert budget.images == int(kit_device.MEMORY_HEADROOM * 10**9 / 10**7)  # 80 images
    assert budget.next_size(30) == 30


# ---------------------------------------------------------------------------------- file index


def test_the_file_index_is_built_by_folds_and_reused(digits, monkeypatch):
    import os

    from kit.data import index
    from kit.data.folds import make_folds, training_table

    make_folds(digits)
    assert (digits.root / index.INDEX_FILE).exists()
    looked = []
    real = index.inspect_file
    monkeypatch.setattr(index, "inspect_file", lambda p: looked.append(p) or real(p))
    table, _ = training_table(digits)
    assert looked == []  # nothing changed: no image opened
    first = table["path"].iloc[0]
    os.utime(first, ns=(0, 10**18))  # a changed file is looked at again, alone
    training_table(digits)
    assert looked == [first]
    frame = index.index_files(digits.root, table["path"].head(3))
    assert (frame["width"] > 0).all() and (frame["bad"] == "").all()
    # a file broken since is found through its new size and mtime
    with open(first, "wb") as handle:
        handle.write(b"\x89PNG not really")
    with pytest.raises(KitError, match="cannot be decoded"):
        training_table(digits)
    assert len(training_table(digits, check_images=False)[0]) == len(table)  # blends read no pixels


def test_fold_audit_counts_every_leak_and_hashes_in_parallel(tmp_path):
    from kit.data import audit

    paths = []
    for i in range(40):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(bytes([i % 5]) * 3000)  # 5 contents, 8 copies each
        paths.append(str(path))
    serial = [audit._hash_file(p) for p in paths]
    assert audit.file_hashes(paths) == serial  # same order with threads
    rows = range(40)
    items = pd.DataFrame({"id": [str(i) for i in rows], "path": paths,
                          "target": [i % 2 for i in rows], "fold": [i % 4 for i in rows]})  # fmt: skip
    problems = audit.audit_folds(items, 4)
    assert any(p.startswith("5 set(s) of byte-identical images") for p in problems), problems
    # each fold holds one class only: the other is named as missing
    assert sum("has no example of class" in p for p in problems) == 4


# ------------------------------------------------------------------------------------ progress


def test_plain_progress_lines_when_not_on_a_terminal(monkeypatch, capsys):
    from kit.progress import Bar, RunProgress, duration

    monkeypatch.setenv("KIT_PROGRESS", "lines")
    bar = Bar(range(5), desc="fold 0 epoch 1/3", total=5, every=0.0)
    for _ in bar:
        bar.set_postfix(loss="0.5000")
    out = capsys.readouterr().out
    assert "\r" not in out and "fold 0 epoch 1/3  1/5  loss 0.5000" in out
    assert "5/5" not in out  # the epoch line follows instead
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
    run = RunProgress("r1", [0, 1, 2], epochs=4)
    line = run.epoch_done(0, 1, 10.0)
    assert line.startswith("run r1: fold 1/3 (fold 0), epoch 1/4") and "ETA 1m50s" in line
    assert "ETA 1m20s" in run.epoch_done(0, 4, 10.0, stopped=True)  # early stop: 8 epochs left
    assert "run r1: fold 1/3" in capsys.readouterr().out


def test_kit_run_ends_with_a_short_summary():
    from kit.pipeline import format_summary

    text = format_summary({"seconds": 125.0, "run": "r1", "metric": "accuracy", "cv": 0.95,
                           "cv_tta": 0.96, "public_score": 0.9, "submission": "s/r1.csv",
                           "run_dir": "runs/r1"})  # fmt: skip
    assert text.splitlines()[0] == "done in 2m05s: run r1, CV accuracy 0.9500 (with TTA 0.9600)"
    assert "public leaderboard: 0.9" in text and "s/r1.csv" in text and "{" not in text


def test_eda_sizes_cover_every_header_and_stats_the_sample(tmp_path):
    from kit.data.eda import write_eda_report

    rows = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        side = 20 if i < 6 else 30
        Image.fromarray(np.full((side, side, 3), i * 10, np.uint8)).save(path)
        rows.append({"id": str(i), "path": str(path), "target": i % 2})
    summary = write_eda_report(pd.DataFrame(rows), tmp_path / "eda.html", max_images=4)
    assert summary["n_decoded"] == 4
    assert sum(s["count"] for s in summary["sizes"]["most_common"]) == 12  # headers: all files
    values = [i * 10 for i in range(12)]
    assert 0 < summary["mean"][0] * 255 < max(values)  # pixel stats from the sample only
