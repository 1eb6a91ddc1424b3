"""Where tensors run, in which precision, and how uint8 batches become normalised inputs there."""

from __future__ import annotations

import contextlib
import os
import random

import cv2
import numpy as np
import torch

from kit.errors import ConfigError, KitError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device asks for cuda but none is available: set it to auto or cpu")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA where supported, fp16 otherwise; full precision elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device, amp: bool) -> bool:
    return amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def to_unit_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW on the host -> float in [0, 1] on the device (4x less to copy than float)."""
    return batch.to(device, non_blocking=True).float().div_(255.0)


def normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores() -> int:
    """Cores other processes kept busy over the last minute (whole cores of the 1-minute load
    average), read once per process so every fold of a run uses the same threads."""
    global _BUSY_CORES
    if _BUSY_CORES is None:
        try:
            _BUSY_CORES = int(os.getloadavg()[0])
        except (AttributeError, OSError):  # no load average (Windows)
            _BUSY_CORES = 0
    return _BUSY_CORES


_BUSY_CORES: int | None = None


def intra_op_threads(
    workers: int, ranks: int = 1, override: int = 0, *, load_aware: bool = True
) -> int:
    """torch threads per training process: cores ÷ (ranks × (workers + 1)), at least 1.

    Every rank and every loader worker needs a core; more intra-op threads than free cores make
    OpenMP threads spin against each other (measured: an epoch 20x slower on a loaded 2-core
    machine). So cores other processes keep busy (busy_cores) are left to them, unless
    load_aware is off (train.deterministic: the thread count must not depend on the machine's
    load, or a resumed run would round differently). override (train.threads) wins when > 0.
    """
    if override > 0:
        return override
    cores = usable_cores()
    if load_aware:
        cores = max(1, cores - busy_cores())
    return max(1, cores // (max(1, ranks) * (max(0, workers) + 1)))


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (and OpenCV's in this process); returns what was set."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _set_cv2_threads(threads)
    return threads


def _set_cv2_threads(threads: int) -> None:
    cv2.setNumThreads(threads)  # OpenCV (albumentations' dependency) has a pool of its own


def tune_backend(device: torch.device, deterministic: bool) -> None:
    """cuDNN picks the fastest convolution algorithm for each input shape (training repeats the
    same shapes); not under train.deterministic, whose runs must repeat bit for bit."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic


def worker_init(worker_id: int) -> None:
    """DataLoader worker start-up: one thread each for OpenCV and torch (the worker is one core)."""
    del worker_id
    torch.set_num_threads(1)
    _set_cv2_threads(1)


def default_workers(device: torch.device, ranks: int = 1) -> int:
    """num_workers when "auto" has no measurement on this machine (`kit bench data --write`).

    An accelerator waits for its batches, so decoding goes to workers: a core each, one left for
    each rank's training process, at most 8. On a CPU a worker takes its core from the model's
    threads, so the work is the same and the loader's start-up is extra: decode in process.
    """
    if device.type == "cpu":
        return 0
    return max(0, min(8, usable_cores() // max(1, ranks) - 1))


class DevicePrefetcher:
    """Iterates a loader's batches already on the device: the next batch is copied on a side
    stream (pinned memory, non_blocking) while the current one computes. Plain on a CPU."""

    def __init__(self, loader, device: torch.device):
        self.loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.device.type != "cuda":
            yield from self.loader
            return
        stream = torch.cuda.Stream(self.device)
        iterator = iter(self.loader)

        def copy_next():
            try:
                batch = next(iterator)
            except StopIteration:
                return None
            with torch.cuda.stream(stream):
                return [_to_device(part, self.device) for part in batch]

        upcoming = copy_next()
        while upcoming is not None:
            current_stream = torch.cuda.current_stream(self.device)
            current_stream.wait_stream(stream)
            for part in upcoming:
                if isinstance(part, torch.Tensor):  # its memory belongs to the compute stream now
                    part.record_stream(current_stream)
            batch, upcoming = upcoming, copy_next()
            yield batch


def _to_device(part, device: torch.device):
    return part.to(device, non_blocking=True) if isinstance(part, torch.Tensor) else part


# Images per forward pass on a CPU: past about this, activations fall out of cache and one big
# batch of every view runs slower than several smaller ones (measured: benchmarks/tta.py).
CPU_FORWARD_IMAGES = 64
MEMORY_HEADROOM = 0.8  # share of the free device memory a prediction pass may plan to use
PROBE_IMAGES = 8  # the first accelerator pass: small, to measure the memory one image takes


class PassBudget:
    """How many images one inference pass may hold: sized to the device, halved on OOM.

    On a CPU: CPU_FORWARD_IMAGES. On an accelerator the first pass runs PROBE_IMAGES images and
    measures their peak memory; later passes take as many as MEMORY_HEADROOM of the free memory
    (or of memory_bytes, when given) holds. An out-of-memory error halves the pass and retries
    it; the result does not depend on the pass size (inference is per image).
    """

    def __init__(
        self, device: torch.device, *, images: int | None = None, memory_bytes: int | None = None
    ):
        self.device = device
        self.memory_bytes = memory_bytes
        self.images = (
            images if images is not None else (CPU_FORWARD_IMAGES if device.type == "cpu" else None)
        )
        self.halvings = 0  # out-of-memory retries so far

    def next_size(self, left: int) -> int:
        return max(1, min(left, self.images if self.images is not None else PROBE_IMAGES))

    def calibrate(self, images: int, peak_bytes: int, free_bytes: int) -> None:
        """Size later passes from one measured pass (accelerators; the first pass only)."""
        if self.images is not None or images <= 0:
            return
        per_image = max(1, peak_bytes) / images
        self.images = max(1, int(MEMORY_HEADROOM * free_bytes / per_image))

    def halve(self, failed: int, error: Exception) -> None:
        if failed <= 1:
            raise KitError(
                f"prediction: one image does not fit in {self.device} memory ({error}): lower "
                'train.image_size, free the device, or set train.device = "cpu"'
            ) from None
        self.images = failed // 2
        self.halvings += 1


def _free_bytes(device: torch.device, memory_bytes: int | None) -> int:
    """Memory a pass may use: the device's free memory plus the allocator's idle cache."""
    if device.type != "cuda":
        return memory_bytes or 0
    free, _ = torch.cuda.mem_get_info(device)
    idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    available = free + idle
    if memory_bytes is not None:
        available = min(available, memory_bytes - torch.cuda.memory_allocated(device))
    return max(0, available)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def run_in_passes(forward, total: int, budget: PassBudget) -> list:
    """forward(start, stop) for consecutive ranges covering 0..total, each as large as budget
    allows; an out-of-memory range is halved and retried. The outputs, in order."""
    outputs, start = [], 0
    cuda = budget.device.type == "cuda"
    while start < total:
        size = budget.next_size(total - start)
        probing = cuda and budget.images is None
        if probing:
            torch.cuda.synchronize(budget.device)
            base = torch.cuda.memory_allocated(budget.device)
            torch.cuda.reset_peak_memory_stats(budget.device)
        try:
            out = forward(start, start + size)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            del error  # its traceback holds the pass's tensors
            if cuda:
                torch.cuda.empty_cache()
            budget.halve(size, "out of memory")
            continue
        if probing:
            peak = torch.cuda.max_memory_allocated(budget.device) - base
            budget.calibrate(size, peak, _free_bytes(budget.device, budget.memory_bytes))
        outputs.append(out)
        start += size
    return outputs
