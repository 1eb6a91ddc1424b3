"""The scan-once file index: what kit knows about each image file without decoding it again.

`cache/index.csv` of the competition holds one row per image file kit has looked at: its path
(relative to the competition folder when inside it), size in bytes, mtime in ns, width and
height in px from the header, format, and why it cannot be decoded ("" when it can). `kit folds`
builds it and every later command reuses it: a file is stat-ed (a few microseconds) and looked
at again only when its size or mtime changed, so `kit train` / `kit predict` no longer re-check
50k images at every start. Commands that never read pixels (ensemble, validate, submit) do not
consult it at all.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from kit.data import images
from kit.data.images import quick_check
from kit.fileio import write_csv

INDEX_FILE = Path("cache") / "index.csv"
COLUMNS = ["path", "size", "mtime_ns", "width", "height", "format", "bad"]
THREADS = 8  # header reads wait on the disk more than on the CPU


def inspect_file(path: str) -> dict:
    """Header facts and the decode check (kit.data.images.quick_check) of one file."""
    row = {"width": 0, "height": 0, "format": "", "bad": quick_check(path) or ""}
    try:
        with Image.open(path) as image:
            row.update(width=image.size[0], height=image.size[1], format=image.format or "")
    except Exception:  # quick_check has already said why
        pass
    return row


def _key(path: str, root: Path | None) -> str:
    if root is None:
        return os.path.abspath(path)
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return os.path.abspath(path)


def index_files(root: Path | None, paths) -> pd.DataFrame:
    """The index rows of paths (in their order, `path` as given), refreshed where files changed.

    root: the competition folder whose cache/index.csv is read and updated; None keeps nothing.
    A file that cannot be stat-ed gets a row with size -1 and its reason, and is not stored.
    """
    paths = [str(p) for p in paths]
    root = Path(os.path.abspath(root)) if root is not None else None
    stored = _read(root)
    keys = [_key(p, root) for p in paths]
    rows, todo = [], []
    for path, key in zip(paths, keys, strict=True):
        try:
            stat = os.stat(path)
        except OSError as error:
            rows.append(
                {
                    "size": -1,
                    "mtime_ns": 0,
                    "width": 0,
                    "height": 0,
                    "format": "",
                    "bad": error.strerror or "unreadable",
                }
            )
            continue
        known = stored.get(key)
        if (
            known is not None
            and known["size"] == stat.st_size
            and (known["mtime_ns"] == stat.st_mtime_ns)
        ):
            rows.append(known)
        else:
            rows.append({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
            todo.append(len(rows) - 1)
    if todo:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            found = list(pool.map(inspect_file, [paths[i] for i in todo]))
        for i, facts in zip(todo, found, strict=True):
            rows[i] = {**rows[i], **facts}
            stored[keys[i]] = rows[i]
        if root is not None:
            _write(root, stored)
    frame = pd.DataFrame(rows, columns=COLUMNS[1:])
    frame.insert(0, "path", paths)
    return frame


def bad_images(root: Path | None, paths) -> dict[str, str]:
    """{path: reason} for every file that cannot be decoded, in the order given."""
    frame = index_files(root, paths)
    # data.max_pixels may differ from when a row was stored: size verdicts are made now
    by_size = frame["bad"].str.contains("data.max_pixels", regex=False)
    frame.loc[by_size, "bad"] = [images.quick_check(p) or "" for p in frame.loc[by_size, "path"]]
    pixels = frame["width"].astype("int64") * frame["height"].astype("int64")
    too_large = (frame["bad"] == "") & (pixels > images.MAX_PIXELS)
    frame.loc[too_large, "bad"] = [
        f"{w}x{h} = {w * h:,} pixels, above data.max_pixels {images.MAX_PIXELS:,}"
        for w, h in frame.loc[too_large, ["width", "height"]].itertuples(index=False)
    ]
    bad = frame[frame["bad"] != ""]
    return dict(zip(bad["path"], bad["bad"], strict=True))


def _read(root: Path | None) -> dict[str, dict]:
    if root is None or not (root / INDEX_FILE).exists():
        return {}
    try:
        frame = pd.read_csv(
            root / INDEX_FILE, dtype={"path": str, "format": str, "bad": str}, keep_default_na=False
        )
    except (OSError, ValueError, pd.errors.ParserError):
        return {}  # a damaged index is rebuilt, never trusted
    if list(frame.columns) != COLUMNS:
        return {}
    records = frame.to_dict("records")
    return {r.pop("path"): r for r in records}


def _write(root: Path, stored: dict[str, dict]) -> None:
    frame = pd.DataFrame([{"path": k, **v} for k, v in stored.items()], columns=COLUMNS)
    (root / INDEX_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_csv(root / INDEX_FILE, frame)
