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
