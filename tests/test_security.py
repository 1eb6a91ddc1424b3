"""The mechanisms behind kit's trust rules, one by one: the name rule and the path guard, the
weights-only checkpoint loader, temp files and modes, the transform allowlist, the shared label
normalisation, the error descriptions, and the answer key's registration rules."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hostile_support import plant_pickle

from kit.errors import KitError, UnsafePathError, describe, one_line
from kit.fileio import atomic_open, clean_stale_temps, write_text
from kit.names import check_name, ensure_inside, named_dir
from kit.platforms.local import LocalLeaderboard
from kit.submission import normalise_labels
from kit.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint


@pytest.mark.parametrize("name", ["r1", "resnet18-20261201-101010", "a.b_c-d", "X" * 64, "9"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", ".", "../x", "/abs", "a/b", "a\\b", "x" * 65, "-x", "_x", "a b", "a..b",
             "ends.", "a.tmp", "\u00e9t\u00e9", "a\x00b"],
)  # fmt: skip
def test_other_names_are_refused_with_the_rule(name):
    with pytest.raises(UnsafePathError, match="letters, digits"):
        check_name(name, "blend")


def test_the_guard_follows_symlinks(tmp_path):
    root = tmp_path / "comp"
    (root / "runs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "runs" / "link").symlink_to(outside)
    assert named_dir(root / "runs", "ok", "run", root) == root / "runs" / "ok"
    with pytest.raises(UnsafePathError, match="outside"):
        named_dir(root / "runs", "link", "run", root)
    assert ensure_inside(root / "runs", root) == (root / "runs").resolve()


def test_a_resume_checkpoint_round_trips_through_the_weights_only_loader(tmp_path):
    state = {
        "model": torch.nn.Linear(3, 2).state_dict(), "rng": rng_state(),
        "progress": {"best_probs": np.random.rand(4, 2).astype(np.float32),
                     "best_score": np.float64(0.5), "history": [{"loss": 1.0}]},
    }  # fmt: skip
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert np.array_equal(loaded["progress"]["best_probs"], state["progress"]["best_probs"])
    assert loaded["rng"]["numpy"][0] == "MT19937"


@pytest.mark.parametrize("wrap", ["dict", "numpy", "bare"])
def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path, wrap):
    marker = tmp_path / "PWNED"
    path = plant_pickle(tmp_path / "evil.pt", marker, wrap)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(KitError, match="previous checkpoint is intact"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_temp_files_go_and_live_ones_stay(tmp_path):
    stale = tmp_path / ".a.csv.x1.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    live = tmp_path / ".b.csv.x2.tmp"
    live.write_text("writing")
    os.utime(live, (time.time() - 60, time.time() - 60))
    with open(live) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a writer still holds it
        write_text(tmp_path / "c.txt", "new")
        assert live.exists()
    assert not stale.exists()
    assert clean_stale_temps(tmp_path) == [live]


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError), atomic_open(tmp_path / "a.csv") as handle:
        handle.write("half")
        raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


def test_only_transform_classes_are_allowed():
    from kit.data.transforms import transform_classes

    allowed = transform_classes()
    assert {"Affine", "CLAHE", "Resize", "HorizontalFlip", "NoOp"} <= set(allowed)
    assert not {"Lambda", "Compose", "BasicTransform", "__class__", "core"} & set(allowed)


@pytest.mark.parametrize("raw, integers, expected", [
    ("09", True, "9"), (" 3 ", True, "3"), ("-0", True, "0"), ("+4", True, "4"),
    ("09", False, "09"), (" cat ", False, "cat"), ("x1", True, "x1"),
])  # fmt: skip
def test_one_normalisation_of_labels(raw, integers, expected):
    assert normalise_labels(pd.Series([raw]), integers).tolist() == [expected]


@pytest.mark.parametrize("error, fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/x/y.csv"), "/x/y.csv: no space left"),
    (OSError(errno.EROFS, "Read-only file system", "/ro"), "read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/p"), "permission denied"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "not valid UTF-8"),
    (MemoryError(), "out of memory"),
])  # fmt: skip
def test_outside_world_failures_are_described(error, fragment):
    message, code = describe(error)
    assert code == 2 and fragment in message


def test_a_bug_is_not_described_and_long_lines_are_cut():
    assert describe(ZeroDivisionError("x")) is None
    assert describe(KeyError("x")) is None
    assert len(one_line("x" * 10_000)) <= 600 and "\n" not in one_line("a\nb")


def answers(targets) -> pd.DataFrame:
    n = len(targets)
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "target": targets,
                         "usage": ["Public", "Private"] * (n // 2)})  # fmt: skip


def test_registration_is_refused_unless_the_host_replaces(tmp_path):
    board = LocalLeaderboard(tmp_path / "lb.sqlite")
    try:
        key = answers([0, 1, 2, 3])
        assert board.register("toy", key, metric="accuracy", daily_limit=3, root=tmp_path / "a")
        assert not board.register("toy", key, metric="accuracy", daily_limit=3, root=tmp_path / "a")
        with pytest.raises(KitError, match="daily_limit 3 -> 1000"):
            board.register("toy", key, metric="accuracy", daily_limit=1000, root=tmp_path / "a")
        with pytest.raises(KitError, match="root"):
            board.register("toy", key, metric="accuracy", daily_limit=3, root=tmp_path / "b")
        assert board.register("toy", key, metric="accuracy", daily_limit=9, replace=True)
        assert board._competition("toy")[1] == 9
    finally:
        board.close()
    assert (tmp_path / "lb.sqlite").stat().st_mode & 0o777 == 0o600


def test_a_failed_record_rolls_the_submission_back(tmp_path):
    board = LocalLeaderboard(tmp_path / "lb.sqlite")
    try:
        board.register("toy", answers([0, 1, 2, 3]), metric="accuracy", daily_limit=3)
        file = tmp_path / "s.csv"
        pd.DataFrame({"id": [f"i{k}" for k in range(4)], "label": [0, 1, 2, 3]}).to_csv(
            file, index=False
        )

        def fails(result):
            raise KitError("could not record")

        with pytest.raises(KitError):
            board.submit("toy", file, "m", team="a", on_accepted=fails)
        assert board.submissions_today("toy", "a") == 0
        assert board.submit("toy", file, "m", team="a")["remaining_today"] == 2
    finally:
        board.close()


def test_the_kernel_template_never_unpickles():
    template = Path(__file__).parent.parent / "templates" / "kernel"
    text = "".join(p.read_text() for p in template.rglob("*") if p.is_file())
    assert "weights_only=False" not in text and "pickle.load" not in text
