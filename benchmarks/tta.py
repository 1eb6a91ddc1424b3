"""TTA from image files, decode included: kit's predict path against ttach's wrapper, 8 views (D4).

    python benchmarks/tta.py [--model mobilenetv3_small_100] [--source 512] [--size 128]
        [--images 256] [--batch 64] [--repeats 2]

Writes --images photo-like JPEGs of --source px, then predicts them with the 8 dihedral views
and a randomly initialised timm model on this machine, three ways:

- kit: kit's own path: create_image_source (a JPEG twice the input or more is decoded at reduced
  size), ImageDataset + DataLoader, the model as kit.infer.predict.inference_model prepares it
  (NHWC with the default train.channels_last), the views made on the device from the one decoded
  batch, forward passes sized by kit.device.PassBudget, probabilities merged by their mean;
- ttach: a plain DataLoader (PIL full decode, the same resize) feeding ttach's
  ClassificationTTAWrapper (d4_transform, mean) when ttach is installed (pip install -e .[bench]);
  otherwise the same algorithm written out (for each view: transform the batch, forward, softmax;
  then the mean), which is what that wrapper runs;
- per view: the common notebook loop, one DataLoader pass per view with the flip in the dataset,
  so every image is decoded 8 times.

The outputs of all three are checked to agree (same views, same merge) before times are compared.
Each timing is the best of --repeats, interleaved so all see the same machine load; torch runs one
thread (set here). Printed: seconds of each, and kit / per-view; the last line is
`tta_ratio=<kit / ttach>` (goal <= 0.5).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from loader import photo  # noqa: E402  the same photo-like JPEGs as benchmarks/loader.py

D4 = ["identity", "hflip", "vflip", "transpose", "antitranspose", "rot90", "rot180", "rot270"]


def d4_wrapper(model):
    """ttach's ClassificationTTAWrapper over d4_transform with mean merging, or its algorithm."""
    import torch

    probs_model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    try:
        import ttach
    except ImportError:
        ops = [
            lambda x: x, lambda x: x.flip(3), lambda x: x.flip(2), lambda x: x.transpose(2, 3),
            lambda x: x.transpose(2, 3).flip(2).flip(3), lambda x: torch.rot90(x, 1, (2, 3)),
            lambda x: torch.rot90(x, 2, (2, 3)), lambda x: torch.rot90(x, 3, (2, 3)),
        ]  # fmt: skip

        def wrapper(x):  # ttach's loop: one forward per view, merged as they come
            total = None
            for op in ops:
                out = probs_model(op(x))
                total = out if total is None else total + out
            return total / len(ops)

        return wrapper, "the ttach algorithm, written out (ttach not installed)"
    return ttach.ClassificationTTAWrapper(probs_model, ttach.aliases.d4_transform(), "mean"), (
        f"ttach {getattr(ttach, '__version__', '')}".strip()
    )


class PlainImages:
    """What a notebook's Dataset does: PIL full decode, then the resize (and an optional flip)."""

    def __init__(self, paths, transform, flip=None):
        self.paths, self.transform, self.flip = paths, transform, flip

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        import numpy as np
        import torch

        from kit.data.images import load_rgb

        image = self.transform(image=load_rgb(self.paths[index]))["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.flip(tensor[None])[0].contiguous() if self.flip else tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv3_small_100")
    parser.add_argument("--source", type=int, default=512, help="px of the JPEGs")
    parser.add_argument("--size", type=int, default=128, help="px of the network input")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="images per batch (before views)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import timm
    import torch
    from torch.utils.data import DataLoader

    from kit.config import Config
    from kit.data.cache import create_image_source
    from kit.data.dataset import ImageDataset
    from kit.data.transforms import create_transform
    from kit.device import PassBudget, normalise, set_threads, to_unit_float
    from kit.infer.predict import _forward, inference_model
    from kit.infer.tta import parse_view
    from kit.task import Task

    set_threads(1)
    torch.manual_seed(0)
    task = Task("multiclass", tuple(range(10)))
    model = timm.create_model(args.model, pretrained=False, num_classes=10).eval()
    device = torch.device("cpu")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    views = [parse_view(v) for v in D4]
    config = Config()
    config.train.image_size = args.size
    transform = create_transform(config.augment.valid, args.size, "augment.valid")
    wrapper, baseline = d4_wrapper(model)

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.images):
            paths.append(str(Path(folder) / f"{i:05d}.jpg"))
            photo(Path(paths[-1]), args.source, i)
        source = create_image_source(config, augment=config.augment.valid)
        kit_loader = DataLoader(ImageDataset(paths, None, transform, source),
                                batch_size=args.batch)  # fmt: skip
        plain_loader = DataLoader(PlainImages(paths, transform), batch_size=args.batch)

        kit_model = inference_model(copy.deepcopy(model), device, config.train.channels_last)

        def kit_tta() -> np.ndarray:
            out, budget = [], PassBudget(device)
            with torch.no_grad():
                for images, _ in kit_loader:
                    x = to_unit_float(images, device)
                    probs = _forward(kit_model, x, views, mean, std, device, False, task, budget)
                    out.append(probs.mean(axis=0))
            return np.concatenate(out)

        def ttach_tta() -> np.ndarray:
            out = []
            with torch.no_grad():
                for images in plain_loader:
                    out.append(wrapper(normalise(to_unit_float(images, device), mean, std)).numpy())
            return np.concatenate(out)

        def per_view_tta() -> np.ndarray:
            total = 0
            with torch.no_grad():
                for view in views:  # one pass over the files per view: 8 decodes per image
                    loader = DataLoader(PlainImages(paths, transform, view), batch_size=args.batch)
                    probs = [
                        torch.softmax(model(normalise(to_unit_float(b, device), mean, std)), 1)
                        for b in loader
                    ]
                    total = total + torch.cat(probs).numpy()
            return total / len(views)

        reference = ttach_tta()
        # kit decodes at reduced size, so its pixels differ slightly: the same predictions, not
        # the same bits (an untrained model's probabilities are near-uniform; compare argmax)
        kit_out = kit_tta()
        agree = float((kit_out.argmax(1) == reference.argmax(1)).mean())
        np.testing.assert_allclose(per_view_tta(), reference, atol=1e-4)  # same pixels, same math
        arms = {"kit": kit_tta, "ttach": ttach_tta, "per_view": per_view_tta}
        times = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, fn in arms.items():
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch_threads={torch.get_num_threads()} load_average={load} model={args.model} "
          f"jpeg={args.source}px input={args.size}px images={args.images} batch={args.batch} "
          f"views=8")  # fmt: skip
    print(f"baseline: {baseline}; kit and it agree on the top class of {agree:.1%} of images")
    for name, seconds in best.items():
        print(f"{name}_seconds={seconds:.3f}")
    print(f"tta_ratio_vs_per_view={best['kit'] / best['per_view']:.3f}")
    print(f"tta_ratio={best['kit'] / best['ttach']:.3f}")


if __name__ == "__main__":
    main()
