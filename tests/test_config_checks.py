"""One config pass: a bad choice, range or name fails when kit.toml is loaded, in one line, before
anything is written, and says whether kit.toml or a --set override holds the bad value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from click.testing import CliRunner

from kit.choices import choices
from kit.cli import cli
from kit.config import Config, config_from_dict
from kit.errors import ConfigError


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: what 'nothing was written' compares."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


BAD_SETTINGS = [
    ("predict.merge=mea", r"predict.merge 'mea' is unknown: did you mean 'mean'\?"),
    ("train.lr=nan", r"train.lr nan must be a finite number"),
    ("train.lr=inf", r"train.lr inf must be a finite number"),
    ("train.lr=0", r"train.lr 0 must be above 0"),
    (
        "train.label_smoothing=2",
        r"train.label_smoothing 2 must be in \[0, 1\)",
    ),
    ("train.image_size=0", r"train.image_size 0 must be at least 8"),
    ("model.drop_rate=1.5", r"model.drop_rate 1.5 must be in \[0, 1\)"),
    ("train.epochs=0", r"train.epochs 0 must be at least 1"),
    ("folds.n_splits=1", r"folds.n_splits 1 must be at least 2"),
    ("train.schedule=cosin", r"train.schedule 'cosin' is unknown: did you mean 'cosine'\?"),
    ("ensemble.method=blend", r"ensemble.method 'blend' is unknown"),
    ("task.type=regression", r"task.type 'regression' is unknown"),
    ("submission.format=index", r"submission.format 'index' is unknown"),
    ("metric.name=auc", r"metric.name 'auc' is unknown"),
    ("metric.name=rmse", r"metric.name 'rmse' does not fit task.type 'multiclass'"),
    ('predict.tta=["identity","flip"]', r"predict.tta view 'flip' is unknown"),
    ("predict.tta=[]", r"predict.tta is empty"),
    ("train.ema_decay=1.0", r"train.ema_decay 1 must be in \[0, 1\)"),
    ("competition.daily_limit=0", r"competition.daily_limit 0 must be at least 1"),
    ("data.layout=folders", r"data.layout 'folders' is unknown"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_SETTINGS)
def test_bad_override_fails_at_load_naming_field_and_origin(digits, setting, message):
    before = snapshot(digits.root)
    result = CliRunner().invoke(cli, ["train", "-C", str(digits.root), "--set", setting])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(message, lines[0]), lines[0]
    assert f"fix --set {setting}" in lines[0]
    assert "Traceback" not in result.output
    assert snapshot(digits.root) == before


def test_a_bad_value_in_kit_toml_says_to_fix_kit_toml(digits):
    path = digits.root / "kit.toml"
    text = re.sub(r"(?m)^lr = .*$", "", path.read_text())
    path.write_text(text.replace("[train]", "[train]\nlr = nan", 1))
    result = CliRunner().invoke(cli, ["folds", "-C", str(digits.root)])
    assert result.exit_code == 2
    assert "train.lr nan must be a finite number; fix it in kit.toml" in result.stderr
    assert not (digits.root / "folds.csv").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.name=resnet9999", r"model.name 'resnet9999' is not a timm model: did you mean"),
        ("model.name=hf-hub:timm/resnet18", r"would download from a hub"),
        (
            'augment.train=[{name="Affine",rotat=[-10,10]}]',
            r"augment.train\[0\] \(Affine\): unknown argument 'rotat'; did you mean 'rotate'\?",
        ),
        ('augment.train=[{name="Afine"}]', r"albumentations has no transform 'Afine'"),
        ('data.preprocess=[{name="CLAHE",clip=2}]', r"data.preprocess\[0\] \(CLAHE\): unknown"),
    ],
)
def test_names_only_timm_or_albumentations_know_fail_before_the_run_exists(
    digits, setting, message
):
    CliRunner().invoke(cli, ["folds", "-C", str(digits.root)], catch_exceptions=False)
    before = snapshot(digits.root)
    result = CliRunner().invoke(
        cli, ["train", "-C", str(digits.root), "--name", "r1", "--set", setting]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert snapshot(digits.root) == before  # no runs/r1, nothing else


def test_the_real_cli_prints_one_line_and_exit_2(digits):
    out = subprocess.run(
        [sys.executable, "-m", "kit", "train", "-C", str(digits.root), "--set", "train.lr=nan"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "Error: train.lr nan must be a finite number; fix --set train.lr=nan"
    ]


def test_choice_lists_have_one_home():
    from kit.data.layout import LAYOUTS
    from kit.infer.ensemble import METHODS
    from kit.submission import FORMATS
    from kit.task import TASKS

    hints = get_type_hints(Config)
    sections = {name: get_type_hints(hint) for name, hint in hints.items()}
    assert choices(sections["data"]["layout"]) == LAYOUTS
    assert choices(sections["ensemble"]["method"]) == METHODS
    assert choices(sections["submission"]["format"]) == FORMATS
    assert choices(sections["task"]["type"]) == TASKS


def test_every_number_is_finite_and_ranges_hold_for_the_defaults():
    config_from_dict({})  # the defaults pass their own checks
    with pytest.raises(ConfigError, match=r"predict.batch_size -1 must be at least 1"):
        config_from_dict({"predict": {"batch_size": -1}})
    with pytest.raises(ConfigError, match=r"train.warmup_epochs -inf must be a finite number"):
        config_from_dict({"train": {"warmup_epochs": float("-inf")}})
