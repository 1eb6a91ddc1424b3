"""kit lr-find: the range test runs kit's own fold loop, plots, suggests, and edits one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY

from kit.cli import cli
from kit.errors import ConfigError
from kit.workbench.lr_find import find_lr, suggest


def test_valley_and_steepest_on_a_known_curve():
    lrs = list(np.logspace(-6, 1, 70))
    x = np.log10(lrs)
    # flat, then falling (fastest at 1e-3), a minimum near 1e-1, then the blow-up
    loss = 2.0 - 1.0 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) ** 2 * 3, 0)
    loss = np.where(x < -4.5, 2.0, loss)  # a plateau: no falling stretch starts before 10^-4.5
    found = suggest(lrs, list(loss))
    assert 3e-4 < found["steepest"] < 3e-3
    assert 1e-3 < found["valley"] < 1e-1  # inside the falling stretch, before the minimum
    assert found["valley"] == float(f"{found['valley']:.3g}")  # rounded for kit.toml


@pytest.mark.slow
def test_range_test_runs_the_real_fold_loop_and_writes_one_line(digits, monkeypatch):
    import kit.workbench.lr_find
    from kit.data.folds import make_folds

    make_folds(type(digits).load(digits.root, TINY))
    calls = []
    real = kit.workbench.lr_find.train_fold  # kit.train.loop's, as lr_find imported it

    def spy(config, fold, *args, **kwargs):
        calls.append((fold, config.train.batch_size, config.model.name))
        return real(config, fold, *args, **kwargs)

    monkeypatch.setattr(kit.workbench.lr_find, "train_fold", spy)
    toml = digits.root / "kit.toml"
    before = toml.read_text().splitlines()
    sets = [f"--set={s}" for s in [*TINY, "train.num_workers=0"]]  # no worker start-ups
    result = CliRunner().invoke(
        cli,
        ["lr-find", "-C", str(digits.root), *sets, "--iters", "15", "--start", "1e-5",
         "--end", "1", "--rule", "steepest", "--write", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "suggested train.lr" in result.output and "lr_find.png" in result.output
    assert calls == [(0, 16, "test_resnet")]  # kit's loop, fold 0, the recipe's batch and model

    saved = json.loads((digits.root / "runs" / "lr_find" / "lr_find.json").read_text())
    lrs = np.asarray(saved["lrs"])
    assert len(lrs) == saved["steps"] and 10 <= len(lrs) <= 15
    assert lrs[0] == pytest.approx(1e-5)
    assert np.allclose(lrs[1:] / lrs[:-1], (1.0 / 1e-5) ** (1 / 14))  # one lr per step
    assert np.isfinite(saved["losses"]).all()
    assert saved["rule"] == "steepest" and saved["suggested_lr"] == saved["steepest"]
    assert 1e-5 <= saved["valley"] <= 1.0 and 1e-5 <= saved["steepest"] <= 1.0
    png = digits.root / "runs" / "lr_find" / "lr_find.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(png.parent.glob(".fold-*"))  # the scratch checkpoints are gone

    after = toml.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    old, new = changed[0]
    assert old.startswith("lr = ") and new.startswith("lr = ")
    assert new.split("#")[1] == old.split("#")[1]  # the comment stays
    assert type(digits).load(digits.root).config.train.lr == saved["steepest"]


def test_bad_arguments_are_refused(tiny):
    with pytest.raises(ConfigError, match="--rule"):
        find_lr(tiny, rule="slide")
    with pytest.raises(ConfigError, match="start < end"):
        find_lr(tiny, start_lr=1.0, end_lr=0.1)
