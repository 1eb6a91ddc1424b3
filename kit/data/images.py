"""Decoding any image file to an RGB uint8 array."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from PIL import Image

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


# libjpeg decodes at 1/2, 1/4 or 1/8 scale by dropping DCT coefficients: far less work than a full
# decode followed by a downscale, and (check: tests/test_speed.py) as close to the full decode +
# area downscale as the full decode + the pipeline's resize is. Used only when the image is
# resized to `target` px right after decoding, and only while both sides stay >= target, so the
# resize still shrinks the image.
REDUCED_FACTORS = (8, 4, 2)


def reduction(width: int, height: int, target: int) -> int:
    """The largest DCT scale-down (8, 4, 2; else 1) that keeps both sides >= target px."""
    if target <= 0:
        return 1
    return next((f for f in REDUCED_FACTORS if min(width, height) >= f * target), 1)


# data.max_pixels: width x height above which an image is refused as a decompression bomb (a tiny
# file that decodes to gigabytes). set_max_pixels() applies the config's value to this process.
MAX_PIXELS = 178_956_970  # PIL's own default


def set_max_pixels(limit: int) -> None:
    """Refuse images above limit pixels (kit's check, before decoding; PIL's stays above it)."""
    global MAX_PIXELS
    MAX_PIXELS = int(limit)
    Image.MAX_IMAGE_PIXELS = max(int(limit), Image.MAX_IMAGE_PIXELS or 0)


def bomb_reason(image: Image.Image) -> str | None:
    """Why image is too large to decode (data.max_pixels), or None."""
    width, height = image.size
    if width * height <= MAX_PIXELS:
        return None
    return (
        f"{width}x{height} = {width * height:,} pixels, above data.max_pixels {MAX_PIXELS:,} "
        "(a decompression bomb?)"
    )


def load_rgb(path: str, target: int = 0) -> np.ndarray:
    """Decode path with to_rgb; a file that cannot be decoded is a DataError naming it.

    target > 0: the caller resizes the image to target x target next, so a JPEG at least twice
    that size is decoded at reduced size (REDUCED_FACTORS); other formats decode in full.
    """
    try:
        if target > 0:  # one read; the JPEG header says whether a reduced decode applies
            with open(path, "rb") as handle:
                data = handle.read()
            size = jpeg_size(data)
            factor = reduction(*size, target) if size else 1
            if factor > 1 and size[0] * size[1] <= MAX_PIXELS:
                reduced = _decode_reduced(data, factor)
                if reduced is not None:
                    return reduced
            source = io.BytesIO(data)
        else:
            source, factor = path, 1
        with Image.open(source) as image:
            too_large = bomb_reason(image)
            if too_large:
                raise DataError(
                    f"{path}: {too_large}: remove the file, or raise data.max_pixels in kit.toml"
                )
            if factor > 1:  # no OpenCV: PIL's draft is the same DCT scaling, a little slower
                image.draft("RGB", (image.size[0] // factor, image.size[1] // factor))
            image.load()
            return to_rgb(image)
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own limit, above data.max_pixels
        raise DataError(
            f"{path}: {' '.join(str(error).split())[:120]}: remove the file, or raise "
            "data.max_pixels in kit.toml"
        ) from None
    except Exception as error:  # OSError, zlib...: the file's fault
        raise DataError(
            f"{path}: cannot decode image ({' '.join(str(error).split())[:160]}); remove or "
            "replace the file, or train with --skip-bad"
        ) from None


# JPEG start-of-frame markers (baseline, extended, progressive, lossless...): they carry the size
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None when data is not a readable JPEG.

    Walks the marker segments (a few, near the start): far cheaper than opening the file with PIL
    just to learn whether a reduced decode applies.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position, end = 2, len(data)
    while position + 9 < end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            position += 2
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # scan data before any frame header: not a JPEG we understand
            return None
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def _decode_reduced(data: bytes, factor: int) -> np.ndarray | None:
    """OpenCV's reduced JPEG decode (faster than PIL's draft), RGB; None when it cannot."""
    flags = {
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }[factor]
    # PIL, kit's full decode, does not apply EXIF orientation, so neither may this one
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
    """Why path cannot be decoded (unreadable, unknown format, truncated, too large), or None.

    It reads the header, and the end of a JPEG (a decoder stops at its end marker, so a truncated
    file lacks it); PNG and others are decoded in full, since PIL's verify() checks only chunk
    CRCs (a PNG with valid CRCs and garbage image data passes it). kit.data.index keeps the
    result per file, so the decode happens once per file, not at every start.
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
            too_large = bomb_reason(image)
            if too_large:
                return too_large
            if head[:3] == b"\xff\xd8\xff":
                if b"\xff\xd9" in tail:
                    return None
                # no end marker near the end: truncated, or data appended after it (some
                # cameras do); only a full decode tells
                image.load()
                return None
            image.verify()
        with Image.open(path) as image:  # verify() leaves the image unusable: open it again
            image.load()
    except Image.DecompressionBombError:
        return f"a decompression bomb (more pixels than data.max_pixels {MAX_PIXELS:,})"
    except Exception as error:  # OSError, zlib, SyntaxError...
        return " ".join(str(error).split())[:80] or "cannot decode"
    return None


def find_bad_images(paths) -> dict[str, str]:
    """{path: reason} for every file quick_check rejects, in the order given."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(quick_check, paths))
    return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}
