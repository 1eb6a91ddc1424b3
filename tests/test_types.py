"""The types that own each fact: Run (runs/<name>/), Task (every task rule), the Platform registry
and the result records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kit.choices import PlatformName, choices
from kit.errors import ConfigError, KitError
from kit.results import SubmitResult, TrainResult
from kit.run import FoldState, Run, RunState, known_runs
from kit.task import MultiLabelTask, OrdinalTask, SingleLabelTask, Task, create_task


# ------------------------------------------------------------------------------------ Run
def test_a_run_names_every_file_and_knows_its_folds(digits):
    run = Run(digits, "r1")
    assert run.dir == digits.root / "runs" / "r1"
    assert not run.exists and known_runs(digits) == []
    with pytest.raises(KitError, match=r"run 'r1' not found .*train one with `kit train`"):
        Run.open(digits, "r1")
    run.dir.mkdir(parents=True)
    run.config_path.write_text("")
    assert Run.open(digits, "r1").exists and known_runs(digits) == ["r1"]
    fold = run.fold(2)
    assert fold.dir == run.dir / "fold2" and fold.state is FoldState.MISSING
    fold.dir.mkdir()
    fold.last.write_bytes(b"x")
    assert fold.state is FoldState.INTERRUPTED and run.has_progress
    fold.result_path.write_text(json.dumps({"fold": 2, "score": 0.5}))
    assert fold.finished and run.finished_folds() == [2] and fold.result()["score"] == 0.5
    assert run.state(complete=False) is RunState.INTERRUPTED
    assert run.state(complete=True) is RunState.FINISHED


def test_run_metrics_update_atomically_and_missing_files_say_the_fix(digits):
    run = Run(digits, "r1")
    run.dir.mkdir(parents=True)
    with pytest.raises(KitError, match=r"metrics.json is missing: finish it with: kit train"):
        run.metrics  # noqa: B018
    run.write_metrics({"cv": 0.9, "metric": "accuracy"})
    assert run.update_metrics(cv_tta=0.95) == {"cv": 0.9, "metric": "accuracy", "cv_tta": 0.95}
    assert json.loads(run.metrics_path.read_text())["cv_tta"] == 0.95
    run.info_path.write_text("{not json")
    with pytest.raises(KitError, match=r"run.json is not valid JSON"):
        run.info  # noqa: B018
    assert run.oof() == run.oof_path  # no TTA table yet
    run.oof_tta_path.write_text("id\n")
    assert run.oof() == run.oof_tta_path and run.oof(tta=False) == run.oof_path


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", ".hidden", "x" * 65, ""])
def test_a_run_name_must_be_a_slug(digits, name):
    with pytest.raises(KitError, match="is not a plain name"):
        Run(digits, name)


def test_a_dead_run_is_one_with_no_epoch_and_no_trainer(digits):
    run = Run(digits, "r1")
    lock = run.claim(new=True)  # this process trains it now
    assert run.is_training and not run.is_dead
    with pytest.raises(KitError, match="being trained by another process"):
        Run(digits, "r1").claim(new=True)
    lock.close()
    assert not run.is_training and run.is_dead  # died before its first epoch: name is free
    run.claim(new=True).close()  # ... so a new run takes it


# ------------------------------------------------------------------------------------ Task
def test_task_kind_picks_its_class():
    assert type(Task("multiclass", (0, 1, 2))) is SingleLabelTask
    assert type(Task("binary", ("no", "yes"))) is SingleLabelTask
    assert type(Task("multilabel", ("a", "b"))) is MultiLabelTask
    assert type(Task("ordinal", (0, 1, 2))) is OrdinalTask
    with pytest.raises(ConfigError, match="task.type 'regression' is unknown"):
        Task("regression", ())
    with pytest.raises(KitError, match="binary needs 2 classes"):
        Task("binary", (0, 1, 2))


def test_log_space_round_trips_and_rank_tables_stay_on_the_simplex():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    single = Task("multiclass", (0, 1, 2, 3))
    np.testing.assert_allclose(single.from_log_space(single.to_log_space(probs)), probs, atol=1e-6)
    np.testing.assert_allclose(single.rank_table(probs).sum(axis=1), 1.0)
    labels = Task("multilabel", ("a", "b", "c", "d"))
    sig = rng.uniform(0.01, 0.99, size=(50, 4))
    np.testing.assert_allclose(labels.from_log_space(labels.to_log_space(sig)), sig, atol=1e-6)
    assert not np.allclose(labels.rank_table(sig).sum(axis=1), 1.0)  # labels are independent
    grades = Task("ordinal", (0, 1, 2))
    assert not grades.can_rank and not grades.merges_in_log_space


def test_each_task_writes_and_refuses_its_submission_formats():
    names = Task("multiclass", ("cat", "dog"))
    assert names.submission_labels(np.array([1, 0]), "class_name") == ["dog", "cat"]
    assert names.submission_labels(np.array([1, 0]), "class_index") == [1, 0]
    digits = Task("multiclass", (3, 5, 7))
    assert digits.submission_labels(np.array([2, 0]), "class_index") == [7, 3]  # labels are ints
    Task("multilabel", ("a",)).check_submission_format("probabilities")
    with pytest.raises(ConfigError, match="multilabel task submits with"):
        Task("multilabel", ("a",)).check_submission_format("class_index")
    with pytest.raises(ConfigError, match="needs classes, not a grade value"):
        Task("ordinal", (0, 1)).check_submission_format("probabilities")


def test_the_submission_format_is_checked_when_kit_toml_loads():
    from kit.config import config_from_dict

    with pytest.raises(ConfigError, match="multilabel task submits with"):
        config_from_dict({"task": {"type": "multilabel"}, "metric": {"name": "f1_macro"}})


def test_per_class_recall_and_class_weights_follow_the_task():
    import torch

    grades = Task("ordinal", (0, 1, 2))
    recall = grades.per_class_recall(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]))
    assert recall == {"0": 1.0, "1": 0.0, "2": 1.0}
    single = Task("multiclass", (0, 1))
    logits, targets = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    plain = single.loss(logits, targets)
    weighted = single.loss(logits, targets, class_weights=torch.tensor([1.0, 3.0]))
    assert torch.isclose(plain, weighted)  # both targets are class 0: its weight cancels out
    both = torch.tensor([0, 1])
    each = torch.nn.functional.cross_entropy(logits, both, reduction="none")
    expected = (each[0] * 1.0 + each[1] * 9.0) / 10.0  # the weighted mean over the batch
    got = single.loss(logits, both, class_weights=torch.tensor([1.0, 9.0]))
    assert torch.isclose(got, expected)


def test_create_task_checks_declared_classes():
    targets = pd.Series(["cat", "dog", "cat"])
    assert create_task("multiclass", targets).classes == ("cat", "dog")
    assert create_task("multiclass", targets, classes=("dog", "cat")).classes == ("dog", "cat")
    with pytest.raises(KitError, match=r"label\(s\) 'dog' are not in data.classes"):
        create_task("multiclass", targets, classes=("cat",))
    with pytest.raises(ConfigError, match="needs data.target_columns"):
        create_task("multilabel", targets)


# ------------------------------------------------------------------------------------ Platform
def test_every_platform_choice_has_one_class(digits):
    from kit.platforms import PLATFORMS, create_platform
    from kit.platforms.local import LocalPlatform

    assert tuple(PLATFORMS) == choices(PlatformName)
    assert isinstance(create_platform(digits), LocalPlatform)
    with pytest.raises(ConfigError, match="submits a Kaggle notebook"):
        create_platform(digits).submit_kernel("a/b", 1, "m", output="s.csv", wait=False)


# ------------------------------------------------------------------------------------ results
def test_result_records_are_typed_and_keep_the_dict_view():
    metrics = {"metric": "accuracy", "cv": 0.9, "cv_std": 0.01, "folds": [0.9, 0.9],
               "complete": True, "missing_folds": [], "per_class": {"0": 1.0}}  # fmt: skip
    result = TrainResult.from_metrics("r1", "/x/runs/r1", metrics)
    assert (result.cv, result.complete, result["per_class"]) == (0.9, True, {"0": 1.0})
    assert json.loads(result.to_json()) == {"run": "r1", "run_dir": "/x/runs/r1", **metrics}
    submitted = SubmitResult.from_platform({"id": 7, "public_score": 0.5, "remaining_today": 4})
    assert (submitted.ref, submitted.status, submitted.remaining_today) == (7, "complete", 4)
    assert SubmitResult.from_platform({"ref": 3}).status == "pending"
