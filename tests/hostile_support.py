"""Shared parts of the hostile-input suites: one prepared competition per module, copied per case,
the one-line-error assertion, tree snapshots and hostile files (pickles, PNGs)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY

from kit.cli import cli

# every command of the suite runs with the tiny recipe and one TTA view
SETS = [*TINY, 'predict.tta=["identity"]', "train.image_size=32"]


def prepare(base: Path) -> tuple[Path, Path]:
    """A digits competition (60 images) with folds, a trained, predicted and blended run r1 and
    the local answer key: (competition root, KIT_HOME). Built once per module."""
    from kit.competition import Competition
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.infer.ensemble import ensemble_runs
    from kit.infer.predict import predict_run
    from kit.scaffold import new_competition
    from kit.train.cv import train_run

    home = base / "kit-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_HOME", str(home))
        patch.setenv("KIT_TEAM", "tester")
        created = new_competition("digits", base / "competitions", example="digits")
        download(created, limit=60, progress=False)
        competition = Competition.load(created.root, SETS)
        make_folds(competition)
        train_run(competition, "r1", progress=False)
        predict_run(competition, "r1", progress=False)
        ensemble_runs(competition, ["r1"], "r1")
    return created.root, home


def copy_prepared(prepared: tuple[Path, Path], tmp_path: Path, kit_home: Path) -> Path:
    """A private copy of the prepared competition (and its answer key in this test's KIT_HOME)."""
    root, home = prepared
    target = tmp_path / "competitions" / "digits"
    shutil.copytree(root, target, symlinks=True)
    shutil.rmtree(kit_home, ignore_errors=True)
    shutil.copytree(home, kit_home)
    return target


def invoke(*args) -> object:
    """kit in-process (CliRunner), stderr kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def with_sets(command: list, root: Path) -> list:
    """command on root with the tiny recipe; the command's own --set values come last (win)."""
    own = [c for c in command if str(c).startswith("--set=")]
    rest = [c for c in command if not str(c).startswith("--set=")]
    return [*rest, "-C", str(root), *[f"--set={s}" for s in SETS], *own]


def kit_executable() -> list[str]:
    script = Path(sys.executable).parent / "kit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kit"]


def kit_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", **extra)
    return env


def run_kit(*args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """kit as a user runs it: a real process; its exit code and stderr are what is checked."""
    return subprocess.run(
        [*kit_executable(), *[str(a) for a in args]], capture_output=True, text=True,
        timeout=timeout, env=kit_env(**env),
    )  # fmt: skip


def stderr_lines(result) -> list[str]:
    text = result.stderr if result.stderr is not None else result.output
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(result, fragment: str, code: int = 2) -> str:
    """exit code, exactly one stderr line (starting `Error: `, holding fragment), no traceback."""
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    everything = (getattr(result, "output", "") or "") + (getattr(result, "stderr", "") or "")
    assert exit_code == code, everything
    lines = stderr_lines(result)
    assert len(lines) == 1, everything
    assert lines[0].startswith("Error: "), lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in everything
    assert len(lines[0]) < 1200, f"an error line of {len(lines[0])} characters"
    return lines[0]


def snapshot(root: Path, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
    """{relative path: (size, mtime_ns, mode)} of every file and folder under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(relative == i or relative.startswith(i.rstrip("/") + "/") for i in ignore):
            continue
        stat = path.lstat()
        size = 0 if path.is_dir() else stat.st_size
        found[relative] = (size, 0 if path.is_dir() else stat.st_mtime_ns, stat.st_mode)
    return found


def assert_unchanged(before: dict, after: dict) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert (added, removed, changed) == ([], [], []), (added, removed, changed)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp") if p.is_file()]


# ---------------------------------------------------------------------------- hostile files
class Marker:
    """Unpickling this runs code: it creates `path`. A safe loader must never do that."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def plant_pickle(path: Path, marker: Path, wrap: str = "dict") -> Path:
    """A checkpoint whose unpickling would create marker."""
    import numpy as np
    import torch

    payload = Marker(marker)
    if wrap == "dict":
        state = {"model": payload, "task": {}, "fold": 0}
    elif wrap == "numpy":
        state = {"model": {}, "task": {}, "fold": 0, "x": np.array([payload], dtype=object)}
    else:
        state = payload
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def garbage_idat_png(path: Path) -> Path:
    """Valid signature, valid CRCs, garbage image data: verify() passes, decoding fails."""
    path.write_bytes(png_bytes(8, 8, bytes(range(7, 207))))
    return path


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A few hundred bytes whose header says side x side pixels (a decompression bomb)."""
    path.write_bytes(png_bytes(side, side, zlib.compress(b"\x00" * 1000)))
    return path


def try_mount(*args: str) -> str | None:
    """None when `mount args` worked, else why it did not (the test then skips)."""
    if shutil.which("mount") is None:
        return "no mount command"
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount refused")


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=20)
