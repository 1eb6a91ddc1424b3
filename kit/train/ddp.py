"""DDP through torchrun: the same code path on one process, one machine or many.

`kit train --nproc N` starts `python -m torch.distributed.run` with N copies of `kit train`; each
copy reads RANK / WORLD_SIZE from the environment, trains on its shard of every batch and gathers
validation predictions so the metric is computed over the whole fold. Rank 0 writes every file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from kit.errors import KitError


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank_and_world()[0] == 0


def setup(device_name: str):
    """Join the process group when started by torchrun; return this rank's device."""
    import torch
    import torch.distributed as dist

    from kit.device import pick_device

    device = pick_device(device_name)
    _, world = rank_and_world()
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when flag is true on any (so all ranks stop together, never hang)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_rows(rows: list[int], values: np.ndarray, n: int) -> np.ndarray:
    """Every rank's (rows, values) -> the whole (n, ...) table on every rank; padding rows repeat."""
    import torch.distributed as dist

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
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, kit_args: list[str], *, echo=print) -> None:
    """Run `kit <kit_args>` on nproc local ranks through torchrun; a rank's error becomes ours."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "kit", *kit_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "KIT_LAUNCHED": "1"}  # fmt: skip
    process = subprocess.run(command, stderr=subprocess.PIPE, text=True, env=env)
    if process.returncode == 0:
        return
    errors = [line for line in process.stderr.splitlines() if line.startswith("Error: ")]
    if errors:
        raise KitError(errors[0].removeprefix("Error: "))
    # a rank that died without a KitError: show what it said (a C++ what(), a Python error)
    said = [line.strip() for line in process.stderr.splitlines()
            if "what():" in line or "Error:" in line or "Exception:" in line]  # fmt: skip
    tail = " | ".join(said[:3] or process.stderr.strip().splitlines()[-3:])
    raise KitError(f"torchrun with --nproc {nproc} failed (exit {process.returncode}): {tail}")
