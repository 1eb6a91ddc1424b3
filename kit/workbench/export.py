"""ONNX export of a run: each fold's model, or the fold ensemble as one graph.

The graph takes what kit's loader gives the model before normalisation and returns what the
prediction tables hold, so serving needs no kit code:

- input `image`: float32 (N, 3, H, W), RGB in [0, 1], H = W = the run's train.image_size, made as
  kit makes it (data.preprocess / bbox crop, then augment.valid, resized to image_size);
- output `probs`: (N, len(columns)) softmax (multiclass, binary), sigmoid (multilabel) or the
  grade value (ordinal), in the order of manifest.json's `columns` (oof.csv's p_<class> columns).

The ensemble graph averages the folds' outputs (as `kit predict` with predict.fold_merge =
"prob", without TTA). Each file is checked against PyTorch on real test images with onnxruntime
(when installed), and the largest absolute difference is reported. Files: runs/<run>/export/
fold<k>.onnx or ensemble.onnx, and manifest.json.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from kit.competition import Competition
from kit.data.cache import create_image_source
from kit.data.dataset import ImageDataset
from kit.data.layout import read_test_items
from kit.data.transforms import create_transform
from kit.device import normalise
from kit.errors import KitError
from kit.fileio import atomic_open, write_json
from kit.task import Task
from kit.train.checkpoint import load_weights
from kit.train.model import create_model, input_stats

EXPORT_DIR = "export"  # runs/<run>/export/
CHECK_IMAGES = 16  # real test images the ONNX outputs are compared on
INLINE_BYTES = 1 << 30  # weights above this go to a side file (protobuf's 2 GiB cap)


def export_onnx(
    competition: Competition,
    run: str,
    *,
    per_fold: bool = False,
    folds: list[int] | None = None,
    opset: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the ONNX file(s) of `run`, check them against PyTorch, return manifest.json's content.

    per_fold: one file per fold (fold<k>.onnx) instead of one ensemble graph (ensemble.onnx).
    folds: only these folds (default: every fold with a best.pt).
    """
    opened = competition.run(run)
    run_dir, config = opened.dir, opened.config
    have = [k for k in opened.fold_indices() if opened.fold(k).best.exists()]
    if folds is not None:
        unknown = sorted(set(folds) - set(have))
        if unknown:
            raise KitError(f"--folds {unknown}: run '{run}' has best.pt for folds {have} only")
        have = [k for k in have if k in folds]
    if not have:
        raise KitError(f"run '{run}' has no fold checkpoints in {run_dir}: train it first")

    models, task = {}, None
    for k in have:
        state = load_weights(opened.fold(k).best, keys=("model", "task"))
        task = Task(state["task"]["kind"], tuple(state["task"]["classes"]))
        model = create_model(config.model, task.num_outputs, root=competition.root)
        model.load_state_dict(state["model"])
        models[k] = model.eval()

    sample = _check_images(competition, config)
    out_dir = run_dir / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = {f"fold{k}": [k] for k in models} if per_fold else {"ensemble": list(models)}
    files = []
    for stem, members in groups.items():
        graph = ServingGraph(
            [models[k] for k in members], *input_stats(models[members[0]]), task
        ).eval()
        path = out_dir / f"{stem}.onnx"
        _export(graph, sample, path, opset)
        with torch.no_grad():
            expected = graph(sample).numpy()
        diff = _max_abs_diff(path, sample.numpy(), expected)
        files.append(
            {
                "file": str(path),
                "folds": members,
                "max_abs_diff": diff,
                "bytes": path.stat().st_size,
            }
        )
        if progress:
            shown = "onnxruntime not installed" if diff is None else f"max abs diff {diff:.2e}"
            print(f"wrote {path} (folds {members}): vs PyTorch on {len(sample)} images: {shown}")
    manifest = {
        "run": run,
        "model": config.model.name,
        "task": task.kind,
        "columns": task.columns,
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": ["N", 3, *sample.shape[2:]],
            "range": [0.0, 1.0],
            "channels": "RGB",
        },
        "output": {"name": "probs", "shape": ["N", len(task.columns)]},
        "ensemble": "mean of fold outputs" if not per_fold else None,
        "files": files,
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


class ServingGraph(torch.nn.Module):
    """Normalise, run every member, activate as the task does, average the members."""

    def __init__(self, members, mean, std, task):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.mean, self.std, self.task = tuple(mean), tuple(std), task

    def forward(self, image):
        x = normalise(image, self.mean, self.std)
        outputs = [self.task.activate(member(x)) for member in self.members]
        return torch.stack(outputs).mean(dim=0)


def _check_images(competition: Competition, config):
    """Up to CHECK_IMAGES real test images as the graph's input: float (N, 3, H, W) in [0, 1]."""
    items = read_test_items(competition).head(CHECK_IMAGES)
    if items.empty:
        raise KitError(f"{competition.config.data.test_dir} holds no test images to check with")
    transform = create_transform(config.augment.valid, config.train.image_size, "augment.valid")
    source = create_image_source(config, competition.root, items)
    dataset = ImageDataset(items["path"], None, transform, source)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images.float().div(255.0)


def _export(graph, sample, path: Path, opset: int | None) -> None:
    """torch.onnx's default (dynamo) exporter with a dynamic batch axis, into one file."""
    weights = sum(p.numel() * p.element_size() for p in graph.parameters())
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        target = Path(scratch) / path.name
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every stage
            torch.onnx.export(
                graph,
                (sample[:2],),
                str(target),
                dynamo=True,
                input_names=["image"],
                output_names=["probs"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=weights > INLINE_BYTES,
                opset_version=opset,
            )
        for produced in sorted(Path(scratch).iterdir()):  # the .onnx (and its .data side file)
            with atomic_open(path.parent / produced.name, "wb") as handle:
                handle.write(produced.read_bytes())


def _max_abs_diff(path: Path, sample: np.ndarray, expected: np.ndarray) -> float | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probs"], {"image": sample.astype(np.float32)})
    return float(np.max(np.abs(got - expected)))
