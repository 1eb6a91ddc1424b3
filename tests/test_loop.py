"""The loop on a tiny digits competition: train -> predict (TTA) -> ensemble, with real files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from kit.data.folds import make_folds
from kit.errors import ConfigError, KitError
from kit.infer.ensemble import ensemble_runs
from kit.infer.predict import predict_run
from kit.submission import check_submission
from kit.train.cv import train_run


@pytest.fixture
def trained(tiny):
    make_folds(tiny)
    result = train_run(tiny, "r1", progress=False)
    return tiny, result


def test_training_writes_every_artefact(trained):
    competition, result = trained
    run_dir = competition.runs_dir / "r1"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.toml", "fold0", "fold1", "fold2", "log.jsonl", "metrics.json", "oof.csv",
        "report.html", "run.json", "tb",  # tb/: TensorBoard event files (kit/workbench/track.py)
    ]  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "accuracy" and len(metrics["folds"]) == 3
    assert 0.0 <= metrics["cv"] <= 1.0 and metrics["cv"] == result["cv"]
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    folds = pd.read_csv(competition.folds_csv, dtype={"id": str})
    assert list(oof.columns) == ["id", "fold"] + [f"p_{c}" for c in range(10)]
    assert sorted(oof["id"]) == sorted(folds["id"])  # every training image, once
    np.testing.assert_allclose(oof.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    # the CV is the metric over the whole OOF table, not a mean of per-batch scores
    targets = folds.set_index("id").loc[oof["id"], "target"].to_numpy()
    assert metrics["cv"] == pytest.approx(
        float(np.mean(oof.filter(like="p_").to_numpy().argmax(1) == targets))
    )
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][:2] == ["start", "epoch"]
    assert sum(e["event"] == "epoch" for e in events) == 3
    checkpoint = torch.load(run_dir / "fold0" / "best.pt", weights_only=False)
    assert {"model", "config", "task", "fold", "epoch", "score"} <= set(checkpoint)
    assert checkpoint["task"] == {"kind": "multiclass", "classes": list(range(10))}
    assert checkpoint["config"]["train"]["epochs"] == 1  # the resolved config, overrides included
    assert "epochs = 1" in (run_dir / "config.toml").read_text()


def test_predict_then_ensemble_makes_a_valid_submission(trained):
    competition, _ = trained
    result = predict_run(competition, "r1", tta=["identity", "shift:1,0"], progress=False)
    test = pd.read_csv(competition.runs_dir / "r1" / "test.csv", dtype={"id": str})
    sample = pd.read_csv(competition.root / "data" / "sample_submission.csv", dtype={"id": str})
    assert test["id"].tolist() == sample["id"].tolist()
    np.testing.assert_allclose(test.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    assert set(result["cv_by_view"]) == {"identity", "shift:1,0"}
    assert 0.0 <= result["cv_tta"] <= 1.0
    blend = ensemble_runs(competition, ["r1"], name="blend")
    path = competition.root / "submissions" / "blend.csv"
    assert blend["submission"] == str(path)
    check_submission(competition, path, list(range(10)))
    submitted = pd.read_csv(path, dtype={"id": str})
    expected = test.filter(like="p_").to_numpy().argmax(axis=1)
    assert submitted["label"].tolist() == expected.tolist()


def test_identity_tta_equals_plain_prediction(trained):
    """One view, decoded once, must reproduce the training loop's own OOF probabilities."""
    competition, _ = trained
    predict_run(competition, "r1", tta=["identity"], progress=False)
    run_dir = competition.runs_dir / "r1"
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str}).set_index("id")
    tta = pd.read_csv(run_dir / "oof_tta.csv", dtype={"id": str}).set_index("id")
    np.testing.assert_allclose(tta.loc[oof.index].to_numpy(), oof.to_numpy(), atol=1e-5)


def test_runs_are_never_overwritten_and_missing_runs_are_named(trained):
    competition, _ = trained
    with pytest.raises(KitError, match="run 'r1' exists"):
        train_run(competition, "r1", progress=False)
    with pytest.raises(KitError, match="run 'nope' not found.*r1"):
        predict_run(competition, "nope", progress=False)
    with pytest.raises(KitError, match="kit predict r1"):
        ensemble_runs(competition, ["r1"], name="x")


def test_batch_larger_than_a_fold_is_refused(tiny):
    from kit.competition import Competition

    make_folds(tiny)
    competition = Competition.load(tiny.root, ["train.batch_size=500"])
    with pytest.raises(ConfigError, match="train.batch_size 500 is larger than fold 0"):
        train_run(competition, "big", progress=False)


def test_unknown_model_suggests_names(tiny):
    from kit.config import ModelSection
    from kit.train.model import create_model

    with pytest.raises(ConfigError, match="did you mean.*resnet18"):
        create_model(ModelSection(name="resnet-18"), 10)


def test_the_whole_recipe_trains_and_scores_ema_beside_raw(tiny):
    """EMA, mixup + cutmix, one-cycle, accumulation, clipping, balanced loss, early stopping."""
    import json

    from kit.competition import Competition

    make_folds(tiny)
    recipe = [
        "train.epochs=2", "train.ema_decay=0.5", "train.mixup_alpha=0.4", "train.cutmix_alpha=1.0",
        "train.mix_until_epoch=2", "train.schedule=onecycle", "train.accumulate=2",
        "train.clip_grad_norm=1.0", "train.balance=loss", "train.patience=1",
        "metric.name=f1_macro",
    ]  # fmt: skip
    competition = Competition.load(tiny.root, [*TINY, *recipe])
    result = train_run(competition, "full", folds=[0], progress=False)
    assert result["metric"] == "f1_macro" and 0.0 <= result["cv"] <= 1.0
    run_dir = competition.runs_dir / "full"
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert 1 <= len(epochs) <= 2
    for event in epochs:  # both weights scored on the whole fold; the better one is kept
        assert event["f1_macro"] == max(event["raw"], event["ema"])
    best = torch.load(run_dir / "fold0" / "best.pt", weights_only=False)
    assert best["weights"] in ("raw", "ema")


def test_frozen_epochs_train_only_the_head(tiny):
    from kit.competition import Competition
    from kit.device import seed_everything
    from kit.train.model import create_model

    make_folds(tiny)
    # class-balanced draws ride along: they change which images come, not which weights learn
    competition = Competition.load(
        tiny.root, [*TINY, "train.freeze_epochs=1", "train.balance=sampler"]
    )
    train_run(competition, "frozen", folds=[0], progress=False)
    seed_everything(competition.config.train.seed + 0)  # fold 0's seed, as the loop sets it
    initial = create_model(competition.config.model, 10).state_dict()
    trained = torch.load(competition.runs_dir / "frozen" / "fold0" / "best.pt")["model"]
    assert torch.equal(trained["conv1.0.weight"], initial["conv1.0.weight"])  # body as created
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])  # head learned


def test_hub_names_and_foreign_weights_fail_clearly(tmp_path):
    import timm

    from kit.config import ModelSection
    from kit.train.model import create_model

    with pytest.raises(ConfigError, match="would download from a hub"):
        create_model(ModelSection(name="hf-hub:timm/resnet18.a1_in1k"), 10)
    weights = tmp_path / "effnet.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), weights)
    with pytest.raises(ConfigError, match=r"missing keys \(e.g. conv1.0.weight.*unexpected keys"):
        create_model(ModelSection(name="test_resnet", pretrained_file=str(weights)), 10)


def test_recipe_values_are_checked(tiny):
    from kit.competition import Competition

    make_folds(tiny)
    for override, message in [
        ("train.schedule=step", "train.schedule 'step' is unknown"),
        ("train.balance=yes", "train.balance 'yes' is unknown"),
        ("train.ema_decay=1.5", "train.ema_decay 1.5 must be in"),
        ("metric.name=rmse", "'rmse' does not fit task.type 'multiclass'"),
    ]:
        with pytest.raises(ConfigError, match=message):  # now at load: before anything runs
            train_run(Competition.load(tiny.root, [*TINY, override]), "bad", progress=False)
        assert not (tiny.runs_dir / "bad").exists()  # refused before anything is written
