"""The resize to image_size and the Affine after it, as one warp (kit's own pipelines only).

kit resizes every image to train.image_size before the configured transforms; with the default
train augmentation the next op is Affine, which warps the whole image again. ResizeAffine draws
the same random parameters as Affine would on the resized image (same order, same generator), and
composes the resize into the affine matrix, so the image is sampled once, from the decoded pixels,
straight into image_size: one pass instead of two, and one bilinear interpolation instead of two
(a little sharper). kit.data.transforms.create_transform uses it only where that is the same
augmentation: Affine first, applied always (p = 1), output size not fitted; and it fuses only a
downscale: an image smaller than image_size (digits' 8 px trained at 32) is resized, then warped,
exactly as the two passes do, since one warp of an upscale is a visibly different image (it moved
digits' public score). tests/test_fused.py checks it against the two passes. It is not a name
kit.toml can give: user pipelines are built from albumentations' own classes only.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class ResizeAffine(A.Affine):
    """A.Resize(size, size) then A.Affine(**affine), as one cv2.warpAffine."""

    def __init__(self, size: int, **affine: Any):
        super().__init__(**affine)
        self.size = int(size)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        resized = {**params, "shape": (self.size, self.size, *params["shape"][2:])}
        out = super().get_params_dependent_on_data(resized, data)  # Affine's draws at size
        out["output_shape"] = (self.size, self.size)
        if min(height, width) < self.size:  # an upscale: one warp would not be the same image
            out["resize_first"] = True
            return out
        # cv2.resize maps source pixel s to (s + 0.5) * size / side - 0.5 (pixel centres)
        sx, sy = self.size / width, self.size / height
        resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        out["matrix"] = out["matrix"] @ resize
        out["bbox_matrix"] = out["bbox_matrix"] @ resize
        return out

    def apply(self, img: np.ndarray, matrix: np.ndarray, output_shape, **params: Any) -> np.ndarray:
        if params.get("resize_first"):  # exactly A.Resize, then A.Affine below
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        if img.ndim != 3 or img.shape[2] not in (3, 4):  # albumentations handles the rest
            return super().apply(img, matrix, output_shape, **params)
        # A.Affine's warp without its per-call identity check and wrappers (this is never one)
        fill = self.fill if isinstance(self.fill, (tuple, list)) else (self.fill,) * img.shape[2]
        return cv2.warpAffine(
            img,
            matrix[:2],
            (int(output_shape[1]), int(output_shape[0])),
            flags=self.interpolation,
            borderMode=self.border_mode,
            borderValue=tuple(float(v) for v in fill),
        )


def fusable(spec: dict[str, Any]) -> bool:
    """Whether [Resize, this spec] is what ResizeAffine does: an Affine that always applies and
    keeps the output size."""
    return (
        spec.get("name") == "Affine"
        and float(spec.get("p", 0.5)) == 1.0
        and not spec.get("fit_output", False)
    )
