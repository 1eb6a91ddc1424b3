"""Where a training image comes from: decode, bbox crop, fixed preprocessing, and an optional cache.

With data.cache, the result (resized to data.cache_size, default train.image_size) is stored under
`cache/<key>/` of the competition, key = a hash of everything that shapes it (preprocess specs,
box columns, size, format). Each file is named by the image's path, size, mtime and box, so a
changed image is decoded again. data.cache_format picks what a file holds: "raw" uint8 pixels
(epochs after the first skip decoding; size x size x 3 bytes each, 79 GB for 100k at 512 px),
"png" (lossless, about 2-3x smaller on photos) or "jpeg" at data.cache_quality (about 10x smaller,
decoded again each epoch, but from a file already at cache_size). disk_bytes says the size.

A JPEG that is resized to decode_size right after decoding is decoded at reduced size
(kit.data.images.load_rgb): create_image_source turns that on only when nothing runs at full
resolution first (no bbox crop, no preprocess, and a cache or a pipeline that resizes first).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from kit.data.images import crop_box, load_rgb
from kit.data.transforms import SIZING, create_preprocess

CACHE_VERSION = 1  # bump when the cached bytes change meaning
SUFFIXES = {"raw": ".u8", "png": ".png", "jpeg": ".jpg"}  # data.cache_format -> file suffix


class ImageSource:
    """path -> HxWx3 uint8 array: the deterministic part of the pipeline (picklable for workers)."""

    def __init__(
        self,
        preprocess=None,
        boxes: dict | None = None,
        cache_dir: Path | None = None,
        size: int = 0,
        *,
        cache_format: str = "raw",
        quality: int = 95,
        decode_size: int = 0,
    ):
        self.preprocess = preprocess
        self.boxes = boxes or {}
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.size = size
        self.cache_format = cache_format
        self.quality = quality
        self.decode_size = decode_size  # px the image is resized to next; 0 = decode in full

    def __call__(self, path: str) -> np.ndarray:
        if self.cache_dir is None:
            return self._make(path)
        stat = os.stat(path)
        identity = (
            f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.boxes.get(path)}"
        )
        name = hashlib.blake2b(identity.encode(), digest_size=12).hexdigest()
        file = self.cache_dir / name[:2] / f"{name}{SUFFIXES[self.cache_format]}"
        try:
            return self._read(file)
        except (FileNotFoundError, ValueError):
            image = self._make(path)
            _store(file, self._encode(image))
            return image

    def _read(self, file: Path) -> np.ndarray:
        data = np.fromfile(file, dtype=np.uint8)
        if self.cache_format == "raw":
            return data.reshape(self.size, self.size, 3)

        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None or bgr.shape != (self.size, self.size, 3):
            raise ValueError(f"{file}: not a cached image")  # half-copied by hand: make it again
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _encode(self, image: np.ndarray) -> bytes:
        if self.cache_format == "raw":
            return image.tobytes()

        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality] if self.cache_format == "jpeg" else []
        ok, encoded = cv2.imencode(
            SUFFIXES[self.cache_format], cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params
        )
        if not ok:
            raise ValueError(f"OpenCV cannot encode a {self.cache_format} cache entry")
        return encoded.tobytes()

    def _make(self, path: str) -> np.ndarray:
        image = load_rgb(path, self.decode_size) if self.decode_size else load_rgb(path)
        box = self.boxes.get(path)
        if box is not None:
            image = crop_box(image, box)
        if self.preprocess is not None:
            image = self.preprocess(image=image)["image"]
        if self.cache_dir is not None:
            interpolation = cv2.INTER_AREA if image.shape[0] > self.size else cv2.INTER_LINEAR
            image = cv2.resize(image, (self.size, self.size), interpolation=interpolation)
        return np.ascontiguousarray(image)


def _store(file: Path, data: bytes) -> None:
    # temp file then rename: parallel workers may write the same entry, and a reader never sees
    # half of one
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temp, file)


def cache_key(config) -> str:
    data = config.data
    shape = {
        "version": CACHE_VERSION,
        "preprocess": data.preprocess,
        "bbox_columns": data.bbox_columns,
        "size": data.cache_size or config.train.image_size,
        **({"format": data.cache_format} if data.cache_format != "raw" else {}),
        **({"quality": data.cache_quality} if data.cache_format == "jpeg" else {}),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def disk_bytes(folder: Path) -> int:
    """Bytes that the files under folder take (a cache's size on disk)."""
    total, pending = 0, [Path(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat().st_size
    return total


def create_image_source(
    config,
    root: Path | None = None,
    items=None,
    *,
    cache: bool | None = None,
    augment: list | None = None,
) -> ImageSource:
    """The ImageSource of a config: boxes from items' bbox columns, cache under root/cache/.

    augment: the specs of the pipeline that follows. When it resizes first (no sizing op of its
    own) and nothing runs before at full resolution, JPEGs are decoded at reduced size.
    """
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
            meta.write_text(
                json.dumps(
                    {"preprocess": data.preprocess, "bbox_columns": data.bbox_columns}, indent=1
                )
            )
    size = data.cache_size or config.train.image_size
    decode_size = 0
    if not data.preprocess and boxes is None:
        if cache_dir is not None:
            decode_size = size  # the cache resizes to size right after decoding
        elif augment is not None and not any(spec.get("name") in SIZING for spec in augment):
            decode_size = config.train.image_size  # the pipeline's first op: Resize to it
    return ImageSource(
        create_preprocess(data.preprocess),
        boxes,
        cache_dir,
        size,
        cache_format=data.cache_format,
        quality=data.cache_quality,
        decode_size=decode_size,
    )
