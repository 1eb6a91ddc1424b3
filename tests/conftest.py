"""Shared fixtures: an isolated kit home per test, and tiny digits competitions in tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never ask PyPI during tests

# a recipe small enough for a CPU test: 1 epoch on 32-px images, batches of 16
TINY = [
    "train.epochs=1",
    "train.batch_size=16",
    "folds.n_splits=3",
    "predict.batch_size=64",
]


@pytest.fixture(autouse=True)
def kit_home(tmp_path, monkeypatch):
    home = tmp_path / "kit-home"
    monkeypatch.setenv("KIT_HOME", str(home))
    monkeypatch.setenv("KIT_TEAM", "tester")
    return home


@pytest.fixture
def digits(tmp_path):
    """A scaffolded digits competition with 150 images (120 train, 30 test), data built."""
    from kit.competition import new_competition
    from kit.data.download import download

    competition = new_competition("digits", tmp_path / "competitions", example="digits")
    download(competition, limit=150)
    return competition


@pytest.fixture
def tiny(digits):
    """The digits fixture loaded with the tiny recipe."""
    from kit.competition import Competition

    return Competition.load(digits.root, TINY)
