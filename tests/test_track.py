"""Tracking: TensorBoard event files (read back with tensorboard) and a real MLflow file store."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from kit.competition import Competition


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 2-fold, 2-epoch run with MLflow on, predicted with TTA and submitted once."""
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.infer.ensemble import ensemble_runs
    from kit.infer.predict import predict_run
    from kit.platforms import submit
    from kit.scaffold import new_competition
    from kit.train.cv import train_run

    root = tmp_path_factory.mktemp("track")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_HOME", str(root / "home"))
        patch.setenv("KIT_TEAM", "tester")
        competition = new_competition("digits", root / "competitions", example="digits")
        download(competition, limit=150)
        overrides = [*TINY, "train.epochs=2", "folds.n_splits=2", "train.num_workers=0",
                     'track.mlflow="file:mlruns"', 'track.experiment="e1"']  # fmt: skip
        competition = Competition.load(competition.root, overrides)
        make_folds(competition)
        trained = train_run(competition, "r1", progress=False)
        predicted = predict_run(competition, "r1", tta=["identity", "shift:1,0"], progress=False)
        blend = ensemble_runs(competition, ["r1"], name="r1")
        submitted = submit(competition, blend["submission"], "tracked")
    return competition, trained, predicted, submitted


@pytest.mark.slow
def test_tensorboard_holds_epochs_lr_cv_tta_and_lb(tracked):
    from kit.workbench.track import read_scalars

    competition, trained, predicted, submitted = tracked
    scalars = read_scalars(competition.runs_dir / "r1")
    for fold in range(2):
        for tag in ("loss", "val_loss", "accuracy", "lr"):
            steps = [step for step, _ in scalars[f"fold{fold}/{tag}"]]
            assert steps == [1, 2], (fold, tag, steps)  # one point per epoch
        assert scalars[f"fold{fold}/best"][0][1] == pytest.approx(trained["folds"][fold])
    events = [json.loads(line) for line in (competition.runs_dir / "r1" / "log.jsonl").open()]
    epoch0 = [e for e in events if e["event"] == "epoch" and e["fold"] == 0]
    assert [v for _, v in scalars["fold0/lr"]] == pytest.approx([e["lr"] for e in epoch0])
    assert [v for _, v in scalars["fold0/loss"]] == pytest.approx([e["loss"] for e in epoch0])
    assert scalars["cv/accuracy"][-1][1] == pytest.approx(trained["cv"])
    assert scalars["cv/std"][-1][1] == pytest.approx(trained["cv_std"])
    assert scalars["cv/tta"][-1][1] == pytest.approx(predicted["cv_tta"])
    assert scalars["lb/public"][-1][1] == pytest.approx(submitted["public_score"])


@pytest.mark.slow
def test_mlflow_file_store_holds_the_same_run(tracked):
    from mlflow.tracking import MlflowClient

    competition, trained, predicted, submitted = tracked
    store = competition.root / "mlruns"
    assert store.is_dir()  # "file:mlruns" resolves under the competition folder
    known = json.loads((competition.runs_dir / "r1" / "track.json").read_text())
    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(known["mlflow_run_id"])
    assert run.info.run_name == "r1"
    assert client.get_experiment(run.info.experiment_id).name == "e1"
    assert run.info.status == "FINISHED"
    assert float(run.data.params["train.lr"]) == competition.config.train.lr
    assert run.data.params["model.name"] == "test_resnet"
    history = client.get_metric_history(run.info.run_id, "fold1/accuracy")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["cv/accuracy"] == pytest.approx(trained["cv"])
    assert run.data.metrics["cv/tta"] == pytest.approx(predicted["cv_tta"])
    assert run.data.metrics["lb/public"] == pytest.approx(submitted["public_score"])


def test_mlflow_uri_resolution(tmp_path):
    from kit.config import Config
    from kit.workbench.track import mlflow_uri

    competition = Competition(root=tmp_path, config=Config())
    assert mlflow_uri(competition) == ""  # off by default
    competition.config.track.mlflow = "file:mlruns"
    assert mlflow_uri(competition) == (tmp_path / "mlruns").resolve().as_uri()
    competition.config.track.mlflow = "http://127.0.0.1:5000"
    assert mlflow_uri(competition) == "http://127.0.0.1:5000"


def test_an_unreachable_mlflow_server_fails_before_training(tmp_path, monkeypatch):
    from kit.config import Config
    from kit.errors import ConfigError
    from kit.workbench.track import Tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not after backoff
    competition = Competition(root=tmp_path, config=Config())
    competition.config.track.mlflow = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(ConfigError, match="MLflow store not usable"):
        Tracker(competition, tmp_path / "runs" / "r1")
