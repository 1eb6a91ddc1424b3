"""kit sweep: an Optuna study over real k-fold runs, scored on OOF, resumable, pruned per fold."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY

from kit.cli import cli
from kit.competition import Competition
from kit.config import load_config
from kit.errors import ConfigError

SPACE = (
    'sweep.params={ "train.lr" = { low = 1e-3, high = 1e-2, log = true }, '
    '"model.name" = { choices = ["test_resnet", "test_efficientnet"] } }'
)


@pytest.fixture
def sweepable(digits):
    from kit.data.folds import make_folds

    competition = Competition.load(digits.root, [*TINY, "train.num_workers=0", SPACE])
    make_folds(competition)
    return competition


@pytest.mark.slow
def test_trials_are_oof_scored_runs_in_the_ledger_and_the_study_resumes(sweepable):
    from kit.data.folds import training_table
    from kit.ledger import list_runs
    from kit.metrics import get_metric
    from kit.workbench.sweep import run_sweep

    summary = run_sweep(sweepable, "s1", trials=1, folds=2, progress=False)
    assert summary["folds"] == [0, 1] and summary["counts"]["complete"] == 1
    first_runs = {t["run"] for t in summary["trials"]}
    assert first_runs == {"s1-t000"}
    mtimes = {
        run: (sweepable.runs_dir / run / "metrics.json").stat().st_mtime for run in first_runs
    }

    # a second call resumes the study from its SQLite file: one more trial, none repeated
    summary = run_sweep(sweepable, "s1", trials=2, folds=2, progress=False)
    assert [t["number"] for t in summary["trials"]] == [0, 1]
    assert summary["counts"]["complete"] == 2  # the median pruner starts after two trials
    for run, mtime in mtimes.items():
        assert (sweepable.runs_dir / run / "metrics.json").stat().st_mtime == mtime

    table, task = training_table(sweepable)
    metric = get_metric("accuracy", task.kind)
    folds = pd.read_csv(sweepable.folds_csv, dtype={"id": str}).set_index("id")["fold"]
    finished = [t for t in summary["trials"] if t["state"] == "complete"]
    for trial in finished:
        run_dir = sweepable.runs_dir / trial["run"]
        oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
        # every OOF row comes from the model of its own fold, which never trained on it
        assert set(oof["fold"]) == {0, 1}
        assert (oof["fold"].to_numpy() == folds.loc[oof["id"]].to_numpy()).all()
        assert len(oof) == int(folds.isin([0, 1]).sum())
        targets = task.encode(table.set_index("id").loc[oof["id"], "target"])
        value = metric.score(task, targets, oof[task.columns].to_numpy())
        assert trial["value"] == pytest.approx(value)  # the trial's score is its OOF metric
        assert trial["fold_scores"] == pytest.approx(json.loads(
            (run_dir / "metrics.json").read_text())["folds"])  # fmt: skip
        trained = Competition.load(sweepable.root).config  # kit.toml itself is untouched
        used = load_config(run_dir / "config.toml")
        assert used.train.lr == pytest.approx(trial["params"]["train.lr"])
        assert used.model.name == trial["params"]["model.name"]
        assert trained.train.lr == 3e-3

    ledger = list_runs(sweepable)
    swept = ledger[ledger["sweep"] == "s1"]
    assert sorted(swept["run"]) == sorted(t["run"] for t in finished)
    best = max(finished, key=lambda t: t["value"])
    assert summary["best"]["run"] == best["run"]
    assert summary["best"]["value"] == pytest.approx(best["value"])
    assert (sweepable.runs_dir / "sweeps" / "s1" / "study.db").exists()


def test_a_trial_below_the_median_is_pruned_after_its_first_fold(sweepable):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    folder = sweepable.runs_dir / "sweeps" / "s2"
    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name="s2", storage=f"sqlite:///{folder / 'study.db'}", direction="maximize"
    )
    distributions = {
        "train.lr": FloatDistribution(1e-3, 1e-2, log=True),
        "model.name": CategoricalDistribution(["test_resnet", "test_efficientnet"]),
    }
    for _ in range(2):  # two earlier trials that scored perfectly on every fold
        study.add_trial(
            optuna.trial.create_trial(
                params={"train.lr": 3e-3, "model.name": "test_resnet"},
                distributions=distributions,
                value=1.0,
                intermediate_values={0: 1.0, 1: 1.0},
            )  # fmt: skip
        )
    sets = [f"--set={s}" for s in [*TINY, "train.num_workers=0", SPACE]]
    result = CliRunner().invoke(
        cli, ["sweep", "-C", str(sweepable.root), *sets, "s2", "--trials", "3", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "summary.json").read_text())
    third = summary["trials"][2]
    assert third["state"] == "pruned"
    assert len(third["fold_scores"]) == 1  # stopped after fold 0, before training folds 1, 2
    assert not (sweepable.runs_dir / third["run"]).exists()  # its folder is removed
    assert "1 pruned" in result.output


@pytest.mark.slow
def test_two_processes_share_one_study(sweepable):
    """Two `kit sweep` processes at once on one SQLite study: trials counted once, no clash."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "kit", "sweep", "-C", str(sweepable.root), "s3",
               *[f"--set={s}" for s in [*TINY, "train.num_workers=0", SPACE]],
               "--trials", "2", "--folds", "1", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]  # fmt: skip
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    summary = json.loads((sweepable.runs_dir / "sweeps" / "s3" / "summary.json").read_text())
    runs = [t["run"] for t in summary["trials"]]
    assert 2 <= len(runs) <= 3  # each process stops once the study holds 2 trials
    assert len(set(runs)) == len(runs)  # no two trials share a run folder
    assert summary["counts"]["fail"] == 0


@pytest.mark.slow
def test_a_trial_whose_process_died_is_retried_and_its_run_resumed(sweepable, monkeypatch):
    import time

    from kit.metrics import get_metric
    from kit.train.cv import train_run
    from kit.workbench import sweep

    monkeypatch.setattr(sweep, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweep, "GRACE_SECONDS", 1)
    folder = sweep.sweep_dir(sweepable, "s4")
    folder.mkdir(parents=True)
    metric = get_metric("accuracy", "multiclass")
    study = sweep._open_study("s4", folder, metric, sweepable.config.sweep)
    study.set_user_attr("folds", [0, 1])
    # a process took trial 0, trained fold 0 of its run, and died (its heartbeat stops)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna: ask() is not optimize()
        trial = study.ask()
    space = sweep.search_space(sweepable.config.sweep.params)
    values = {key: sweep.suggest(trial, key, spec) for key, spec in space.items()}
    trial.set_user_attr("run", "s4-t000")
    study._storage.record_heartbeat(trial._trial_id)
    train_run(sweep.with_values(sweepable, values), "s4-t000", folds=[0], progress=False)
    fold0 = sweepable.runs_dir / "s4-t000" / "fold0" / "result.json"
    done_at = fold0.stat().st_mtime
    time.sleep(2.5)  # past the grace period

    summary = sweep.run_sweep(sweepable, "s4", trials=1, folds=2, progress=False)
    states = [(t["number"], t["state"], t["run"]) for t in summary["trials"]]
    assert states == [(0, "fail", "s4-t000"), (1, "complete", "s4-t000")]
    assert summary["trials"][1]["params"] == summary["trials"][0]["params"]
    assert fold0.stat().st_mtime == done_at  # fold 0 was not trained again: the run resumed
    assert (sweepable.runs_dir / "s4-t000" / "fold1" / "result.json").exists()


def test_search_space_is_checked(tiny):
    from kit.workbench.sweep import run_sweep, search_space

    empty = Competition.load(tiny.root, [*TINY, "sweep.params={}"])
    with pytest.raises(ConfigError, match="params is empty"):
        run_sweep(empty, "s0")
    with pytest.raises(ConfigError, match="fixed for a sweep"):
        search_space({"folds.n_splits": {"low": 2, "high": 5}})
    with pytest.raises(ConfigError, match="no key"):
        search_space({"train.epoch": {"low": 1, "high": 5}})
    with pytest.raises(ConfigError, match="low < high"):
        search_space({"train.lr": {"low": 1e-2, "high": 1e-3}})
    space = search_space({"train": {"epochs": {"low": 1, "high": 3}}})  # a nested table too
    assert space == {"train.epochs": {"low": 1, "high": 3, "integer": True}}
