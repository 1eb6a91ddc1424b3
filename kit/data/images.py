"""Decoding any image file to an RGB uint8 array."""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from kit.errors import DataError


def to_rgb(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8: grayscale repeats, RGBA drops alpha, 16-bit scales to 8-bit."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: str) -> np.ndarray:
    """Decode path with to_rgb; a file that cannot be decoded is a DataError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(
            f"{path}: cannot decode image ({error}); remove or replace the file"
        ) from None


def crop_box(image: np.ndarray, box) -> np.ndarray:
    """The x0, y0, x1, y1 box (px, clipped to the image) of an HxWxC array; the whole image if empty."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 <= x0 or y1 <= y0:
        return image
    return image[y0:y1, x0:x1]


def quick_check(path: str) -> str | None:
    """Why path cannot be decoded (unreadable, unknown format, truncated), or None.

    Cheap enough for every training start: it reads the header, and the end of a JPEG (a decoder
    stops at its end marker, so a truncated file lacks it); PNG and others are verified by PIL.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64))
            tail = handle.read()
    except OSError as error:
        return error.strerror or "unreadable"
    try:
        with Image.open(path) as image:
            if head[:3] == b"\xff\xd8\xff":
                if b"\xff\xd9" in tail:
                    return None
                # no end marker near the end: truncated, or data appended after it (some
                # cameras do); only a full decode tells
                image.load()
                return None
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        return " ".join(str(error).split())[:80] or "cannot decode"
    return None


def find_bad_images(paths) -> dict[str, str]:
    """{path: reason} for every file quick_check rejects, in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(paths)
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(quick_check, paths))
    return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}
