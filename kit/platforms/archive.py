"""Unpack a downloaded zip without trusting it.

A zip names its own members, so a hostile or broken archive can point outside the destination
(`../x`, `/etc/x`), plant a symlink that a later member writes through, or declare terabytes
(a zip bomb). Every member is checked before a single byte is written, the archive is unpacked
into a temp folder beside the destination, and only a complete extraction is moved into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from kit.errors import DataError

# Large enough for any image competition on Kaggle, small enough to stop a bomb early.
DEFAULT_MAX_TOTAL_BYTES = 400 * 1024**3


class ArchiveError(DataError):
    """A zip archive is unsafe or unreadable."""


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be extracted, or None when it is a plain file or folder."""
    name = info.filename.replace("\\", "/")  # zips written on Windows may use backslashes
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component"
    file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix mode lives in the high 16 bits
    if file_type == stat.S_IFLNK:
        return "is a symlink"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: written without a file type
        return "is not a regular file"
    return None


def check_members(zip_path: Path, archive: zipfile.ZipFile, max_total_bytes: int) -> int:
    """Refuse the archive unless every member is safe; return the declared uncompressed total."""
    total = 0
    for info in archive.infolist():
        problem = _member_problem(info)
        if problem:
            raise ArchiveError(
                f"{zip_path}: member '{info.filename}' {problem}; refusing to extract "
                "(delete the archive, or ask its publisher for a clean one)"
            )
        total += info.file_size
    if total > max_total_bytes:
        raise ArchiveError(
            f"{zip_path}: declares {total:,} bytes uncompressed, over the limit of "
            f"{max_total_bytes:,}; refusing to extract (raise max_total_bytes if it is genuine)"
        )
    return total


def _move_into_place(staged: Path, dest: Path) -> None:
    """Move each top-level entry of staged into dest, replacing what was there."""
    for entry in sorted(staged.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            # A folder cannot be replaced in one rename: park the old one, swap, then delete.
            parked = Path(tempfile.mkdtemp(dir=dest, prefix=f".{entry.name}.old-"))
            os.replace(target, parked / entry.name)
            os.replace(entry, target)
            shutil.rmtree(parked, ignore_errors=True)
        else:
            if target.is_dir():
                target.unlink()  # a symlink to a folder
            os.replace(entry, target)


def safe_extract(
    zip_path: Path, dest: Path, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
) -> list[Path]:
    """Extract zip_path into dest after checking every member; return the files, sorted."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(
            f"{zip_path}: not a readable zip ({error}); delete it and download again"
        ) from error
    with archive:
        total = check_members(zip_path, archive, max_total_bytes)
        dest.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest).free
        if total > free:
            raise ArchiveError(
                f"{zip_path}: needs {total:,} bytes to extract but {dest} has {free:,} free; "
                "free some disk space and run again"
            )
        # Beside dest (same file system) so the final moves are renames, not copies.
        staged = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
        try:
            names = []
            for info in archive.infolist():
                archive.extract(info, staged)
                if not info.is_dir():
                    names.append(info.filename)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            shutil.rmtree(staged, ignore_errors=True)
            raise ArchiveError(
                f"{zip_path}: extraction failed ({error}); delete it and download again"
            ) from error
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    try:
        _move_into_place(staged, dest)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staged)
    return sorted(dest / name for name in names)
