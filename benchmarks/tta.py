"""kit's batched TTA against ttach's ClassificationTTAWrapper, the same 8 views (D4), one run.

    python benchmarks/tta.py [--model resnet18] [--size 64] [--images 512] [--batch 64]

Both start from the same uint8 batches, already decoded (decoding is the same for both), run the
same randomly initialised timm model on the CPU and merge probabilities by their mean. kit makes
the 8 views of a batch on the device and runs them as ONE forward pass of 8 x batch images;
ttach runs 8 forward passes of one batch each, de-augmenting and merging in between. The outputs
are checked to agree before the times are compared. Each timing is the best of --repeats,
interleaved so both see the same machine load. The last line is `tta_ratio=<kit / ttach>`
(goal <= 1.0). Needs the bench extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

D4 = ["identity", "hflip", "vflip", "transpose", "antitranspose", "rot90", "rot180", "rot270"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="px, side of the input")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="images per batch (before views)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import timm
    import torch
    import ttach

    from kit.device import normalise, to_unit_float
    from kit.infer.merge import merge
    from kit.infer.predict import _forward
    from kit.infer.tta import parse_view
    from kit.task import Task

    torch.manual_seed(0)
    task = Task("multiclass", tuple(range(10)))
    model = timm.create_model(args.model, pretrained=False, num_classes=10).eval()
    device = torch.device("cpu")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                           generator=generator)  # fmt: skip
    batches = list(images.split(args.batch))
    views = [parse_view(v) for v in D4]

    def kit_tta() -> np.ndarray:
        out = []
        with torch.no_grad():
            for batch in batches:
                x = to_unit_float(batch, device)
                out.append(merge(_forward(model, x, views, mean, std, device, False, task),
                                 "mean", task.kind))  # fmt: skip
        return np.concatenate(out)

    probs_model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    wrapper = ttach.ClassificationTTAWrapper(probs_model, ttach.aliases.d4_transform(), "mean")

    def ttach_tta() -> np.ndarray:
        out = []
        with torch.no_grad():
            for batch in batches:
                x = normalise(to_unit_float(batch, device), mean, std)
                out.append(wrapper(x).numpy())
        return np.concatenate(out)

    np.testing.assert_allclose(kit_tta(), ttach_tta(), atol=1e-4)  # the same 8 views, merged alike
    kit_times, ttach_times = [], []
    for _ in range(args.repeats):
        for fn, times in ((kit_tta, kit_times), (ttach_tta, ttach_times)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    print(f"torch_threads={torch.get_num_threads()} model={args.model} size={args.size} "
          f"images={args.images} batch={args.batch} views=8")  # fmt: skip
    print(f"kit_seconds={min(kit_times):.3f}")
    print(f"ttach_seconds={min(ttach_times):.3f}")
    print(f"tta_ratio={min(kit_times) / min(ttach_times):.3f}")


if __name__ == "__main__":
    main()
