"""Where a training image comes from: decode, bbox crop, fixed preprocessing, and an optional cache.

With data.cache, the result (resized to data.cache_size, default train.image_size) is stored under
`cache/<key>/` of the competition, key = a hash of everything that shapes it (preprocess specs,
box columns, size). Each file is named by the image's path, size, mtime and box, so a changed
image is decoded again. Epochs after the first read raw pixels instead of decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from kit.data.images import crop_box, load_rgb

CACHE_VERSION = 1  # bump when the cached bytes change meaning


class ImageSource:
    """path -> HxWx3 uint8 array: the deterministic part of the pipeline (picklable for workers)."""

    def __init__(self, preprocess=None, boxes: dict | None = None, cache_dir: Path | None = None,
                 size: int = 0):  # fmt: skip
        self.preprocess = preprocess
        self.boxes = boxes or {}
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.size = size

    def __call__(self, path: str) -> np.ndarray:
        if self.cache_dir is None:
            return self._make(path)
        stat = os.stat(path)
        identity = (
            f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.boxes.get(path)}"
        )
        name = hashlib.blake2b(identity.encode(), digest_size=12).hexdigest()
        file = self.cache_dir / name[:2] / f"{name}.u8"
        try:
            return np.fromfile(file, dtype=np.uint8).reshape(self.size, self.size, 3)
        except (FileNotFoundError, ValueError):
            image = self._make(path)
            _store(file, image)
            return image

    def _make(self, path: str) -> np.ndarray:
        image = load_rgb(path)
        box = self.boxes.get(path)
        if box is not None:
            image = crop_box(image, box)
        if self.preprocess is not None:
            image = self.preprocess(image=image)["image"]
        if self.cache_dir is not None:
            import cv2

            interpolation = cv2.INTER_AREA if image.shape[0] > self.size else cv2.INTER_LINEAR
            image = cv2.resize(image, (self.size, self.size), interpolation=interpolation)
        return np.ascontiguousarray(image)


def _store(file: Path, image: np.ndarray) -> None:
    # temp file then rename: parallel workers may write the same entry, and a reader never sees
    # half of one
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(image.tobytes())
    os.replace(temp, file)


def cache_key(config) -> str:
    data = config.data
    shape = {
        "version": CACHE_VERSION,
        "preprocess": data.preprocess,
        "bbox_columns": data.bbox_columns,
        "size": data.cache_size or config.train.image_size,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def create_image_source(config, root: Path | None = None, items=None, *,
                        cache: bool | None = None) -> ImageSource:  # fmt: skip
    """The ImageSource of a config: boxes from items' bbox columns, cache under root/cache/."""
    from kit.data.transforms import create_preprocess

    data = config.data
    boxes = None
    if data.bbox_columns and items is not None and set(data.bbox_columns) <= set(items.columns):
        values = items[data.bbox_columns].to_numpy(dtype=float)
        boxes = {path: tuple(box) for path, box in zip(items["path"], values, strict=True)}
    use_cache = data.cache if cache is None else cache
    cache_dir = None
    if use_cache:
        if root is None:
            raise ValueError("a cached ImageSource needs the competition root")
        cache_dir = Path(root) / "cache" / cache_key(config)
        cache_dir.mkdir(parents=True, exist_ok=True)
        meta = cache_dir / "key.json"
        if not meta.exists():
            meta.write_text(json.dumps({"preprocess": data.preprocess,
                                        "bbox_columns": data.bbox_columns}, indent=1))  # fmt: skip
    return ImageSource(
        create_preprocess(data.preprocess), boxes, cache_dir,
        data.cache_size or config.train.image_size,
    )  # fmt: skip
