"""A torch Dataset over image files: decode, resize, augment, and hand uint8 CHW tensors on."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from kit.data.images import load_rgb


class ImageDataset(Dataset):
    """Items are (uint8 CxHxW tensor, encoded target); normalisation happens on the device.

    source turns a path into an HxWx3 uint8 array (kit.data.cache.ImageSource: bbox crop, fixed
    preprocessing, cache); the default only decodes.
    """

    def __init__(self, paths: list[str], targets: np.ndarray | None, transform, source=None):
        self.paths = list(paths)
        self.targets = targets  # Task.encode's output: class indices, 0/1 rows or grades
        self.transform = transform
        self.source = source or load_rgb

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = self.transform(image=self.source(self.paths[index]))["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        target = -1 if self.targets is None else self.targets[index]
        return tensor, target
