"""Shared fixtures: an isolated kit home per test, and tiny digits competitions in tmp_path."""

from __future__ import annotations

import os

import pytest
from kaggle_server import route_client_to

from kit.platforms import kaggle_client

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
    from kit.data.download import download
    from kit.scaffold import new_competition

    competition = new_competition("digits", tmp_path / "competitions", example="digits")
    download(competition, limit=150)
    return competition


@pytest.fixture
def tiny(digits):
    """The digits fixture loaded with the tiny recipe."""
    from kit.competition import Competition

    return Competition.load(digits.root, TINY)


@pytest.fixture
def fake_kaggle(server, monkeypatch, tmp_path):
    """The real client routed to the module's `server` fixture, with fake credentials and millisecond retries."""
    route_client_to(server, monkeypatch, tmp_path / "home")
    monkeypatch.setattr(kaggle_client, "RETRY_DELAYS", (0.01, 0.02, 0.04))
    yield server
    assert server.connects == [], "something tried to leave over https"
    assert all(entry.absolute_form for entry in server.log), "a request bypassed the proxy"
