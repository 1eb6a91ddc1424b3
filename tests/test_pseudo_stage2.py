"""Stage 2 of pseudo-labelling: a new run trains on stage-1 labels and records where they came from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from kit.competition import Competition
from kit.data.folds import make_folds, training_table
from kit.errors import ConfigError
from kit.infer.predict import predict_run
from kit.infer.pseudo import make_pseudo_labels, read_pseudo_labels, stage2_targets
from kit.train.cv import train_run


@pytest.fixture
def stage1(tiny):
    make_folds(tiny)
    train_run(tiny, "s1", progress=False)
    predict_run(tiny, "s1", tta=["identity"], progress=False)
    make_pseudo_labels(tiny, ["s1"], "p1", threshold=1e-6)  # every test image, soft
    return tiny


def test_stage2_targets_mix_oof_soft_labels_and_add_the_test_images(stage1):
    table, task = training_table(stage1)
    pseudo = read_pseudo_labels(stage1, "p1", task)
    fold0 = table[table["fold"] != 0].reset_index(drop=True)
    items, targets = stage2_targets(task, fold0, pseudo, weight=0.25)
    test_ids = pd.read_csv(stage1.root / "data" / "sample_submission.csv", dtype={"id": str})["id"]
    assert len(items) == len(fold0) + len(test_ids)
    assert set(items["id"].iloc[len(fold0) :]) == set(test_ids)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    # a training image's target: 0.75 of its one-hot label + 0.25 of its OOF row, never other rows
    oof = pd.read_csv(stage1.runs_dir / "s1" / "oof_tta.csv", dtype={"id": str}).set_index("id")
    first = fold0.iloc[0]
    expected = 0.25 * oof.loc[first["id"], task.columns].to_numpy(dtype=float)
    expected[task.classes.index(first["target"])] += 0.75
    np.testing.assert_allclose(targets[0], expected, atol=1e-5)
    # a test image's target is its fold-ensemble row from stage 1
    test = pd.read_csv(stage1.runs_dir / "s1" / "test.csv", dtype={"id": str}).set_index("id")
    row = items.index[items["id"] == test_ids.iloc[0]][0]
    np.testing.assert_allclose(targets[row], test.loc[test_ids.iloc[0]].to_numpy(), atol=1e-5)


def test_a_stage2_run_trains_and_records_its_stage1_runs(stage1):
    competition = Competition.load(stage1.root, [*TINY, 'train.pseudo="p1"'])
    result = train_run(competition, "s2", progress=False)
    assert 0.0 <= result["cv"] <= 1.0
    info = json.loads((stage1.runs_dir / "s2" / "run.json").read_text())
    assert info["stage1"]["stage1_runs"] == ["s1"] and info["stage1"]["name"] == "p1"
    assert json.loads((stage1.runs_dir / "s1" / "run.json").read_text())["stage1"] is None


def test_missing_or_unfit_pseudo_labels_are_config_errors(stage1):
    missing = Competition.load(stage1.root, [*TINY, 'train.pseudo="nope"'])
    with pytest.raises(ConfigError, match=r"train.pseudo = 'nope'.*kit pseudo"):
        train_run(missing, "x", progress=False)
    balanced = Competition.load(stage1.root, [*TINY, 'train.pseudo="p1"', 'train.balance="loss"'])
    with pytest.raises(ConfigError, match="train.balance"):
        train_run(balanced, "y", progress=False)
