"""DDP through torchrun: the same code path on one process, one machine or many.

`train_run(..., nproc=N)` (`kit train --nproc N`) starts `python -m torch.distributed.run` with N
ranks of kit/train/rank.py; each rank reads RANK / WORLD_SIZE from the environment, trains
on its shard of every batch and gathers validation predictions so the metric is computed over the
whole fold. Rank 0 writes every file; each rank reports its result or error through a file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from kit.device import pick_device
from kit.errors import KitError
from kit.fileio import write_json
from kit.results import TrainResult


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank_and_world()[0] == 0


def setup(device_name: str):
    """Join the process group when started by torchrun; return this rank's device."""
    device = pick_device(device_name)
    _, world = rank_and_world()
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when flag is true on any (so all ranks stop together, never hang)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_rows(rows: list[int], values: np.ndarray, n: int) -> np.ndarray:
    """Every rank's (rows, values) -> the whole (n, ...) table on every rank; padding rows repeat."""
    if not (dist.is_available() and dist.is_initialized()):
        out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
        out[rows] = values
        return out
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (rows, values))
    out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
    for part_rows, part_values in parts:
        out[part_rows] = part_values
    return out


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


REPORT_PREFIX = "rank"  # <spec dir>/rank<k>.json: what rank k returned, or its error


def inside_rank() -> bool:
    """True in a process torchrun started (its ranks train; the launcher waits)."""
    return "LOCAL_RANK" in os.environ


def launch_run(
    competition, run: str, *, nproc: int, folds: list[int] | None, resume: bool, progress: bool
) -> dict:
    """train_run on nproc local ranks through torchrun; rank 0's result, or a rank's error.

    Each rank reports through <spec dir>/rank<k>.json (never through its output), so a
    KitError on any rank becomes the same one-line KitError here.
    """
    competition.runs_dir.mkdir(parents=True, exist_ok=True)
    spec_dir = Path(tempfile.mkdtemp(prefix=".ddp-", dir=competition.runs_dir))
    try:
        spec = {
            "root": str(competition.root),
            "config": competition.config.to_dict(),
            "run": run,
            "folds": folds,
            "resume": resume,
            "progress": progress,
        }
        write_json(spec_dir / "job.json", spec)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "kit.train.rank",
            str(spec_dir),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        process = subprocess.run(command, stderr=subprocess.PIPE, text=True, env=env)
        reports = {
            int(path.stem.removeprefix(REPORT_PREFIX)): json.loads(path.read_text())
            for path in spec_dir.glob(f"{REPORT_PREFIX}*.json")
        }
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)
    failed = [reports[k] for k in sorted(reports) if "error" in reports[k]]
    if failed:
        raise KitError(failed[0]["error"])
    if process.returncode == 0 and 0 in reports:
        result = reports[0]["result"]
        return TrainResult.from_metrics(result.pop("run"), result.pop("run_dir"), result)
    # a rank that died without reporting (a signal, a C++ abort): show what it said
    said = [
        line.strip()
        for line in process.stderr.splitlines()
        if "what():" in line or "Error:" in line or "Exception:" in line
    ]
    tail = " | ".join(said[:3] or process.stderr.strip().splitlines()[-3:])
    raise KitError(f"torchrun with --nproc {nproc} failed (exit {process.returncode}): {tail}")
