"""kit export --onnx: fold graphs and the fold ensemble, checked with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY
from run_support import trained_digits

from kit.cli import cli
from kit.errors import KitError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-fold, 1-epoch run on 150 digits."""
    return trained_digits(
        tmp_path_factory.mktemp("export"), [*TINY, "folds.n_splits=2", "train.num_workers=0"]
    )


def oof_inputs(competition, fold: int):
    """Fold `fold`'s held-out images as the graph takes them, and their ids."""
    import torch

    from kit.config import load_config
    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.folds import training_table
    from kit.data.transforms import create_transform

    config = load_config(competition.runs_dir / "r1" / "config.toml")
    table, _ = training_table(competition)
    rows = table[table["fold"] == fold].head(24)
    transform = create_transform(config.augment.valid, config.train.image_size, "augment.valid")
    dataset = ImageDataset(rows["path"], None, transform, create_image_source(config, None, rows))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).float().div(255.0)
    return images.numpy(), rows["id"].tolist()


@pytest.mark.slow
def test_a_fold_graph_reproduces_the_runs_oof_predictions(trained):
    import onnxruntime

    from kit.workbench.export import export_onnx

    manifest = export_onnx(trained, "r1", per_fold=True, folds=[0], progress=False)
    (entry,) = manifest["files"]
    assert entry["folds"] == [0] and entry["file"].endswith("export/fold0.onnx")
    assert entry["max_abs_diff"] < 1e-4
    assert manifest["columns"] == [f"p_{c}" for c in range(10)]
    images, ids = oof_inputs(trained, 0)
    session = onnxruntime.InferenceSession(entry["file"], providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probs"], {"image": images})  # a batch size the export never saw
    oof = pd.read_csv(trained.runs_dir / "r1" / "oof.csv", dtype={"id": str}).set_index("id")
    assert np.abs(probs - oof.loc[ids, manifest["columns"]].to_numpy()).max() < 1e-4
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_cli_exports_the_fold_ensemble_as_one_graph(trained):
    result = CliRunner().invoke(cli, ["export", "-C", str(trained.root), "r1", "--onnx"])
    assert result.exit_code == 0, result.output
    assert "max abs diff" in result.output
    export_dir = trained.runs_dir / "r1" / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    (entry,) = [f for f in manifest["files"] if f["file"].endswith("ensemble.onnx")]
    assert entry["folds"] == [0, 1] and entry["max_abs_diff"] < 1e-4
    import onnx

    graph = onnx.load(str(export_dir / "ensemble.onnx")).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == [
        "probs"
    ]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is dynamic


def test_export_refuses_unknown_folds_and_a_missing_flag(trained):
    from kit.workbench.export import export_onnx

    with pytest.raises(KitError, match="best.pt for folds"):
        export_onnx(trained, "r1", folds=[7])
    result = CliRunner().invoke(cli, ["export", "-C", str(trained.root), "r1"])
    assert result.exit_code == 2 and "--onnx" in result.output
