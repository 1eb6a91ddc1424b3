"""Folds as jobs: side by side on one machine (`--parallel`) or as Ray tasks (`--cluster`).

A run is still created and assembled by kit.train.cv.train_run in this process (the driver); a
runner only decides where each fold trains. Every fold goes through the same body,
kit.train.fold.train_one_fold, whether it runs here, in a child process or in a Ray worker, so
oof.csv, metrics.json and the ledger row are those of a sequential run at the same torch thread
count.

Storage: the competition folder must be on storage every node sees at the same path (checked at
start: each node writes a marker the driver must read back). Workers write their fold's files
where a local run would; nothing is sent back through Ray. Why: recovery needs a fold's last.pt
to outlive the worker (and the node) that wrote it, so a retried task, or a later
`kit train --resume RUN --cluster ...`, continues from the last optimiser step; checkpoints are
the largest artefacts and shipping them through the object store would cost the driver's memory;
and the driver follows progress by reading the run's log.jsonl as it grows.

Faults: a child process or Ray worker killed mid-fold (kill -9, a dead node) is started again
and resumes from last.pt; a fold that fails with a KitError stops the run with that one line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

import kit
from kit.competition import Competition
from kit.config import config_from_dict, load_config
from kit.data.folds import training_table
from kit.device import pick_device, usable_cores
from kit.errors import ConfigError, KitError
from kit.fileio import append_jsonl, kit_home
from kit.progress import duration
from kit.run import CONFIG_NAME, LOG_NAME, Fold
from kit.train.fold import FoldJob, pseudo_labels, train_one_fold
from kit.warm import WARM_MODULES, spawn_child

# what every fold process needs, wherever it runs: an offline albumentations, no Ray telemetry
FOLD_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
RETRIES = 2  # times a fold whose process was killed is started again (it resumes from last.pt)
POLL_SECONDS = 0.25  # how often the driver looks at its folds and at log.jsonl
MARKERS_DIR = ".cluster-check"  # runs/<run>/.cluster-check/<node>.txt: the shared-storage check
CHECK_TIMEOUT = 120.0  # seconds the shared-storage check may take (a worker per node starts)
MAX_SOCKET_PATH = 107 - 60  # Ray's session dir adds about 60 chars to a unix socket's path

Echo = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# one fold, wherever it runs


def run_fold_job(
    root: str | Path,
    run: str,
    fold: int,
    *,
    config: dict | None = None,
    device: str | None = None,
    where: str = "",
    attempt: int = 1,
) -> dict:
    """Train fold `fold` of the existing run `run` (resuming from its last.pt); its summary.

    config: the run's resolved config (a Ray task ships it); None reads runs/<run>/config.toml.
    device: overrides train.device (a child pinned to one GPU sees it as "cuda").
    """
    root = Path(root)
    run_dir = root / "runs" / run
    if not run_dir.is_dir():
        raise KitError(
            f"{run_dir} not found on {where or socket.gethostname()}: put the competition folder "
            "on storage every node mounts at the same path"
        )
    resolved = (
        config_from_dict(config) if config is not None else load_config(run_dir / CONFIG_NAME)
    )
    if device:
        resolved.train.device = device
    competition = Competition(root=root, config=resolved)
    table, task = training_table(competition)
    pseudo = pseudo_labels(competition, task)
    torch_device = pick_device(resolved.train.device)
    log_path = run_dir / LOG_NAME
    fold_files = Fold(run_dir, fold)
    with fold_lock(fold_files.dir):  # a worker of a killed driver may still train it: wait
        if fold_files.finished:
            return fold_files.result()  # it finished meanwhile
        resumed = fold_files.last.exists()
        start = {
            "event": "fold_start",
            "fold": fold,
            "where": where or socket.gethostname(),
            "pid": os.getpid(),
            "device": str(torch_device),
            "attempt": attempt,
            "resumed": resumed,
        }
        append_jsonl(log_path, start)
        # resume: a retried fold continues from its last.pt
        job = FoldJob(
            competition, run_dir, table, task, torch_device, log_path, pseudo, False, True
        )
        return train_one_fold(job, fold)


FOLD_LOCK = ".train.lock"  # fold<k>/.train.lock: flock held by the process training the fold


@contextlib.contextmanager
def fold_lock(fold_dir: Path) -> Iterator[None]:
    """Hold the fold's flock; the kernel frees it when its holder dies, even by SIGKILL."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    with open(fold_dir / FOLD_LOCK, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    """`ROOT [--device D] [--where W] [--cores C]`: a --parallel child (kit.warm.spawn_child).

    It reads `RUN FOLD ATTEMPT` lines on stdin and trains each fold, answering one JSON line per
    fold (`{"fold": k}`, or `{"fold": k, "error": "..."}` for a KitError); EOF ends it.
    """
    parser = argparse.ArgumentParser(prog="python -m kit.cluster")
    parser.add_argument("root")
    parser.add_argument("--device", default="")
    parser.add_argument("--where", default="")
    parser.add_argument("--cores", default="", help="CPU cores to run on, e.g. 0,1")
    args = parser.parse_args(argv)
    if args.cores:  # torch threads are set per fold, from train.threads or this mask
        os.sched_setaffinity(0, [int(core) for core in args.cores.split(",")])
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a stray print goes to the worker log, never into the answers

    for line in sys.stdin:
        run, fold, attempt = line.split()
        fold, attempt = int(fold), int(attempt)
        try:
            run_fold_job(
                args.root, run, fold, device=args.device or None, where=args.where, attempt=attempt
            )
            answers.write(json.dumps({"fold": fold}) + "\n")
        except KitError as error:
            print(f"Error: {error}", file=sys.stderr, flush=True)
            answers.write(json.dumps({"fold": fold, "error": str(error)}) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# jobs: a (run, fold) to train, and the queue a runner takes them from


@dataclass(frozen=True)
class Job:
    """One fold of one run: what a runner trains (the run exists; the fold resumes its last.pt)."""

    root: Path  # the competition folder
    run_dir: Path  # runs/<run>/
    fold: int
    config: object = None  # the run's kit.config.Config (a Ray task ships it); None: config.toml

    def label(self) -> str:
        return f"{self.run_dir.name} fold {self.fold}"


class JobSource:
    """The jobs a runner trains, in order; thread-safe, so several runs (a job set, sweep
    trials) can add theirs while the runner trains. Sealed: no more jobs will come."""

    def __init__(self, jobs: list[Job] = (), *, sealed: bool = False, expected: int = 0) -> None:
        self._jobs: deque[Job] = deque(jobs)
        self._lock = threading.Lock()
        self.sealed = sealed
        self.planned = expected  # folds planned (a sweep's), for the slot count; 0: those added
        self.added = len(self._jobs)
        self._runs: list[str] = list(dict.fromkeys(job.run_dir.name for job in jobs))
        self._last_dir: Path | None = jobs[-1].run_dir if jobs else None

    def add(self, jobs: list[Job]) -> None:
        with self._lock:
            if self.sealed:
                raise KitError("the job set is closed: no more folds can be added")
            self._jobs.extend(jobs)
            self.added += len(jobs)
            for job in jobs:
                if job.run_dir.name not in self._runs:
                    self._runs.append(job.run_dir.name)
                self._last_dir = job.run_dir

    def seal(self) -> None:
        with self._lock:
            self.sealed = True

    def take(self) -> Job | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def discard(self, run: str) -> int:
        """Take the run's jobs not yet started (a pruned sweep trial); how many there were."""
        with self._lock:
            kept = deque(job for job in self._jobs if job.run_dir.name != run)
            dropped, self._jobs = len(self._jobs) - len(kept), kept
            return dropped

    def drop(self) -> list[Job]:
        """Take every job not yet started (an error stops the set)."""
        with self._lock:
            left, self._jobs = list(self._jobs), deque()
            self.sealed = True
            return left

    @property
    def expected(self) -> int:
        return self.planned or self.added

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.sealed and not self._jobs

    def log_dir(self) -> Path | None:
        """The run folder of the last job added: where a worker log goes between jobs."""
        return self._last_dir

    def describe(self) -> str:
        runs = self._runs
        if len(runs) == 1 and self.sealed:
            return f"{runs[0]}: {self.expected} fold(s)"
        shown = ", ".join(runs[:4]) + (f" +{len(runs) - 4}" if len(runs) > 4 else "")
        return f"{len(runs)} run(s) ({shown}): {self.expected} fold(s)"


# ---------------------------------------------------------------------------------------------
# the run-level view: every fold's progress, read from log.jsonl as the workers append to it


def run_folds(runner, run_dir: Path, jobs: list[Job], slots: int, on_epoch) -> Iterator[dict]:
    """One run's fold jobs on a runner (LocalRunner or RayRunner): each summary as its fold
    finishes, under one ClusterProgress view that also feeds on_epoch from log.jsonl."""
    if not jobs:
        return
    config = runner.config
    folds = [job.fold for job in jobs]
    progress = ClusterProgress(
        run_dir,
        folds,
        config.train.epochs,
        config.metric.name,
        slots,
        runner.echo,
        on_epoch=on_epoch,
    )
    for _, summary in runner.run_jobs(JobSource(jobs, sealed=True), poll=progress.poll):
        yield summary


class ClusterProgress:
    """Tails runs/<run>/log.jsonl and prints one line per fold start, epoch and fold end:
    fold k/N, where it runs, its epoch, and an ETA for the whole run."""

    def __init__(
        self,
        run_dir: Path,
        folds: list[int],
        epochs: int,
        metric: str,
        slots: int,
        echo: Echo | None,
        on_epoch: Callable[[dict], object] | None = None,
    ) -> None:
        self.run_dir, self.folds, self.epochs, self.metric = run_dir, list(folds), epochs, metric
        self.on_epoch = on_epoch  # the tracker's hook: every epoch event, as a sequential run
        self.slots = max(1, slots)
        self.echo = echo
        self.offset = (run_dir / LOG_NAME).stat().st_size if (run_dir / LOG_NAME).exists() else 0
        self.started = time.monotonic()
        self.where: dict[int, str] = {}
        self.epochs_done: dict[int, int] = {}
        self.finished: set[int] = set()
        self.epoch_seconds: list[float] = []

    def eta(self) -> float:
        if not self.epoch_seconds:
            return float("nan")
        left = sum(
            self.epochs - self.epochs_done.get(k, 0) for k in self.folds if k not in self.finished
        )
        running = min(self.slots, max(1, len(self.folds) - len(self.finished)))
        return sum(self.epoch_seconds) / len(self.epoch_seconds) * left / running

    def line(self, fold: int, text: str) -> str:
        position = self.folds.index(fold) + 1 if fold in self.folds else 0
        eta = self.eta()
        tail = f", ETA {duration(eta)}" if eta == eta else ""  # nan until an epoch has ended
        return (
            f"{self.run_dir.name}: fold {position}/{len(self.folds)} (fold {fold}) on "
            f"{self.where.get(fold, '?')}: {text} [{len(self.finished)}/{len(self.folds)} done, "
            f"{duration(time.monotonic() - self.started)} elapsed{tail}]"
        )

    def poll(self) -> list[str]:
        """Read the events appended since the last poll; print and return their lines."""
        path = self.run_dir / LOG_NAME
        if not path.exists():
            return []
        with open(path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next poll
        self.offset += len(complete)
        lines = []
        for raw in complete.splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            text = self._event(event)
            if text:
                lines.append(text)
                if self.echo is not None:
                    self.echo(text)
        return lines

    def _event(self, event: dict) -> str | None:
        fold, name = event.get("fold"), event.get("event")
        if fold is None or fold not in self.folds:
            return None
        if name == "fold_start":
            self.where[fold] = f"{event['where']} pid {event['pid']} ({event['device']})"
            again = f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""
            how = "resumed from last.pt" if event.get("resumed") else "started"
            return self.line(fold, f"{how}{again}")
        if name == "epoch":
            if self.on_epoch is not None:
                self.on_epoch(event)
            self.epochs_done[fold] = event["epoch"]
            self.epoch_seconds.append(float(event.get("seconds") or 0.0))
            score = event.get(self.metric)
            shown = f" {self.metric} {score:.4f}" if isinstance(score, float) else ""
            return self.line(fold, f"epoch {event['epoch']}/{self.epochs}{shown}")
        if name == "fold":
            self.finished.add(fold)
            return self.line(
                fold, f"done, {self.metric} {event['score']:.4f} at epoch {event['epoch']}"
            )
        return None


def read_summary(run_dir: Path, fold: int) -> dict:
    return Fold(run_dir, fold).result()


# ---------------------------------------------------------------------------------------------
# --parallel: a child process per device or per CPU slot


@dataclass(frozen=True)
class Slot:
    """Where one child trains: CPU cores it is pinned to, and the GPU it sees (if any)."""

    index: int
    cores: tuple[int, ...]  # sched_setaffinity set; torch threads = len(cores) unless train.threads
    gpu: str = ""  # CUDA_VISIBLE_DEVICES for the child; "" trains on the CPU

    def describe(self) -> str:
        cores = f"cores {','.join(map(str, self.cores))}" if self.cores else "all cores"
        return (
            f"slot {self.index} (gpu {self.gpu}, {cores})"
            if self.gpu
            else f"slot {self.index} ({cores})"
        )


def parse_parallel(text: str | int) -> int:
    """'auto' -> 0 (decide from the devices), 'N' -> N >= 1."""
    value = str(text).strip().lower()
    if value == "auto":
        return 0
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise KitError(f"--parallel {text!r}: give auto or a number of folds at once, e.g. 2")


def visible_gpus(device: str) -> list[str]:
    """The CUDA devices this machine would train on for train.device, as CUDA_VISIBLE_DEVICES ids."""
    if not (device == "auto" or device.startswith("cuda")):
        return []

    if not torch.cuda.is_available():
        if device.startswith("cuda"):
            raise ConfigError(
                f"train.device {device!r} asks for cuda but none is available: set it to auto or cpu"
            )
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [part.strip() for part in listed.split(",") if part.strip()] if listed else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def plan_slots(
    parallel: str | int,
    device: str,
    threads: int,
    folds: int,
    cores: list[int] | None = None,
    gpus: list[str] | None = None,
) -> list[Slot]:
    """Up to `parallel` slots (auto: one per GPU, else cores ÷ train.threads), never more than
    the folds to train; the cores are split evenly so the children do not fight for them."""
    wanted = parse_parallel(parallel)
    if cores is None:
        try:
            cores = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = list(range(usable_cores()))
    gpus = visible_gpus(device) if gpus is None else gpus
    if wanted == 0:
        wanted = len(gpus) if gpus else max(1, len(cores) // max(1, threads))
    n = max(1, min(wanted, folds))
    share = len(cores) // n
    slots = []
    for i in range(n):
        # pin only when each slot gets a core of its own and train.threads fits in it
        pinned = tuple(cores[i * share : (i + 1) * share]) if share and threads <= share else ()
        slots.append(Slot(i, pinned, gpus[i % len(gpus)] if gpus else ""))
    return slots


class _Child:
    """One slot's child process: reads `RUN FOLD ATTEMPT` lines, answers a JSON line per fold.

    It is asked for before the run exists (kit.warm.spawn_child returns at once), so the warm
    server's last imports overlap the driver's checks and the run's creation.
    """

    def __init__(self, root: Path, slot: Slot, wake: threading.Event) -> None:
        self.slot = slot
        self.wake = wake  # set when it answers or ends: the driver's loop looks at once
        self.current: tuple[int, int] | None = None  # (fold, attempt) being trained
        self.said: deque[str] = deque(maxlen=400)  # its stderr, kept for the worker log
        self.log: Path | None = None  # where close() appends what it said, once a run exists
        argv = [str(root), "--where", f"{socket.gethostname()} {slot.describe()}"]
        if slot.cores:
            argv += ["--cores", ",".join(map(str, slot.cores))]
        env = {**os.environ, **FOLD_ENV}
        if slot.gpu:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
            argv += ["--device", "cuda"]
        (stdin, self.jobs), (answers, stdout), (said, stderr) = (os.pipe() for _ in range(3))
        try:
            self.process = spawn_child(argv, env, stdin=stdin, stdout=stdout, stderr=stderr)
        finally:  # the child holds its own ends: EOF reaches each side when the other closes
            for fd in (stdin, stdout, stderr):
                os.close(fd)
        self.jobs = os.fdopen(self.jobs, "w", buffering=1)
        self.answers_in = os.fdopen(answers, "r")
        self.said_in = os.fdopen(said, "r", errors="replace")
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._listen, daemon=True).start()

    def _read(self) -> None:
        for line in self.answers_in:
            with contextlib.suppress(ValueError):
                self.answers.put(json.loads(line))
                self.wake.set()
        self.wake.set()  # it ended

    def _listen(self) -> None:
        for line in self.said_in:
            self.said.append(line.rstrip("\n"))

    def last_error(self) -> str:
        """Its `Error: ...` line, else the last lines it wrote."""
        lines = [*self.said, *filter(None, [getattr(self.process, "failure", "")])]
        errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
        return errors[-1] if errors else " | ".join(line.strip() for line in lines[-3:])

    def give(self, run: str, fold: int, attempt: int) -> None:
        self.current = (fold, attempt)
        self.jobs.write(f"{run} {fold} {attempt}\n")

    def end_input(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.jobs.close()  # end of work: the child exits by itself

    def close(self, log: Path | None = None, grace: float = 5.0) -> None:
        log = log or self.log
        self.end_input()
        try:
            self.process.wait(timeout=grace if self.current is None else 0)
        except subprocess.TimeoutExpired:
            _stop(self.process, grace)  # still training (an error elsewhere, Ctrl-C): stop it
        if log is not None and self.said:
            with open(log, "a") as handle:
                handle.write("\n".join(self.said) + "\n")


class LocalRunner:
    """Trains the folds of a run in child processes, one per slot, each slot's folds in turn
    (a child, forked warm from kit.warm's server, trains fold after fold as a sequential run does).

    Used as a context manager, the children start on entry, before the run is created.
    """

    def __init__(
        self,
        config,
        parallel: str | int = "auto",
        *,
        root: Path | None = None,
        echo: Echo | None = None,
        retries: int = RETRIES,
    ) -> None:
        self.config = config
        self.parallel = parallel
        self.root = root
        self.echo = echo
        self.retries = retries
        self.threads = int(getattr(config.train, "threads", 0) or 0)
        self.gpus = visible_gpus(config.train.device)
        self.device = "cuda" if self.gpus else config.train.device.replace("auto", "cpu")
        parse_parallel(parallel)  # a bad --parallel fails before the run exists
        self.children: dict[int, _Child] = {}
        self.wake = threading.Event()

    def slots(self, folds: int) -> list[Slot]:
        return plan_slots(
            self.parallel, self.config.train.device, self.threads, folds, gpus=self.gpus
        )

    def __enter__(self) -> LocalRunner:
        if self.root is not None:  # warm: one child per slot of a whole k-fold run
            for slot in self.slots(self.config.folds.n_splits):
                self.children[slot.index] = _Child(self.root, slot, self.wake)
        return self

    def __exit__(self, *exc) -> None:
        for child in self.children.values():
            child.close()
        self.children.clear()

    def __call__(
        self, competition, run_dir: Path, folds: list[int], *, on_epoch=None
    ) -> Iterator[dict]:
        """Train `folds`; yield each fold's summary as it finishes.

        on_epoch(event): each epoch event the folds append to log.jsonl, as the tracker of a
        sequential run gets it (read within POLL_SECONDS, all of a fold's before its summary)."""
        jobs = [Job(competition.root, run_dir, fold) for fold in folds]
        yield from run_folds(self, run_dir, jobs, len(self.slots(len(folds))), on_epoch)

    def run_jobs(self, source: JobSource, poll: Callable[[], object] = lambda: None):
        """Train the jobs `source` gives (folds of any runs of this competition), each slot's in
        turn, until it is sealed and empty; yield (job, summary) as each fold finishes.
        poll(): called about every POLL_SECONDS and before each summary is yielded."""
        children = self.children
        slots = self.slots(max(1, source.expected))
        for index in [i for i in children if i >= len(slots)]:  # fewer folds than slots
            children.pop(index).close()
        if self.echo is not None:
            self.echo(
                f"{source.describe()} on {len(slots)} slot(s): "
                + "; ".join(s.describe() for s in slots)
            )
        retried: deque[tuple[Job, int]] = deque()  # killed folds go first, resuming
        busy: dict[int, Job] = {}  # slot index -> the job its child trains
        try:
            while retried or busy or not source.exhausted:
                for slot in slots:
                    child = children.get(slot.index)
                    if child is not None and child.current is not None:
                        continue
                    item = retried.popleft() if retried else None
                    if item is None:
                        job = source.take()
                        item = (job, 1) if job is not None else None
                    if item is None:
                        break
                    if child is None:
                        child = children[slot.index] = _Child(item[0].root, slot, self.wake)
                    busy[slot.index] = item[0]
                    child.give(item[0].run_dir.name, item[0].fold, item[1])
                poll()
                for index, child in list(children.items()):
                    while not child.answers.empty():
                        answer = child.answers.get()
                        job, (fold, attempt) = busy.pop(index), child.current
                        child.current = None
                        if answer.get("error"):
                            raise KitError(f"{job.label()}: {answer['error']}")
                        poll()
                        yield job, read_summary(job.run_dir, fold)
                    code = child.process.poll()
                    if code is None or not child.answers.empty():
                        continue
                    del children[index]
                    job = busy.pop(index, None)
                    log = _worker_log(job.run_dir if job else source.log_dir(), index)
                    child.close(log)
                    if child.current is None or job is None:
                        continue  # it ended between folds; a new child takes the next one
                    fold, attempt = child.current
                    if code < 0 and attempt <= self.retries:  # killed: start again, resume
                        if self.echo is not None:
                            self.echo(
                                f"{job.label()} was killed "
                                f"({signal.Signals(-code).name}); resuming it from last.pt"
                            )
                        retried.append((job, attempt + 1))
                        continue
                    how = (
                        f"was killed ({signal.Signals(-code).name}) {attempt} times"
                        if code < 0
                        else f"failed (exit {code})"
                    )
                    raise KitError(
                        f"{job.label()} {how}: {child.last_error()} (log: {log}); "
                        f"continue with kit train --resume {job.run_dir.name}"
                    )
                self.wake.wait(POLL_SECONDS)  # a child's answer ends the wait at once
                self.wake.clear()
        finally:
            for index, child in list(children.items()):  # done, an error or Ctrl-C: no orphans
                job = busy.get(index)
                log = _worker_log(job.run_dir if job else source.log_dir(), index)
                if child.current is not None:
                    children.pop(index).close(log)
                else:
                    child.log = log
                    child.end_input()  # it exits while the driver assembles the run


def _worker_log(run_dir: Path | None, slot: int) -> Path | None:
    """runs/<run>/worker<slot>.log, where a child's stderr is kept; None without a run."""
    return run_dir / f"worker{slot}.log" if run_dir is not None and run_dir.is_dir() else None


def _stop(process, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


# ---------------------------------------------------------------------------------------------
# --cluster: each fold a Ray task


def _ray():
    try:
        import ray
    except ImportError:
        raise KitError("--cluster needs Ray: pip install 'kit[cluster]'") from None
    return ray


def short_temp_dir() -> str:
    """A temp dir for a Ray started by `--cluster local`: KIT_HOME/ray when its unix socket paths
    fit in 107 chars, else a fresh /tmp/kit-ray-* folder."""
    home = kit_home() / "ray"
    if len(str(home)) <= MAX_SOCKET_PATH:
        home.mkdir(parents=True, exist_ok=True)
        return str(home)
    return tempfile.mkdtemp(prefix="kit-ray-")


def local_ray_auth() -> None:
    """Token auth for a Ray this process starts, with the token in the environment only.

    Ray 2.60's ray.init() turns token auth on for a new local cluster and writes the token to
    ~/.ray/auth_token; a token in RAY_AUTH_TOKEN keeps the protection and writes nothing outside
    KIT_HOME. An explicit RAY_AUTH_MODE is left as the user set it.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    if "ray" in sys.modules:  # Ray caches its config at import: read the mode again, as Ray does
        from ray._raylet import Config

        Config.initialize("")


def _check_listening(address: str) -> None:
    """Fail in seconds, with the fix, when nothing listens at the address (ray.init would wait)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise KitError(
            f"--cluster {address!r}: give ray://HOST:PORT (Ray Client, port 10001 by default), "
            "HOST:PORT (the head's GCS port, 6379 by default), auto or local"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise KitError(
            f"--cluster {address}: nothing answers at {host}:{port} ({error.strerror or error}): "
            "start the head with `ray start --head` there, or check the address"
        ) from None


def _fold_task(root: str, run: str, fold: int, config: dict, device: str) -> dict:
    """The body of a fold's Ray task (kit.cluster is shipped to the workers by runtime_env)."""
    import ray

    context = ray.get_runtime_context()
    where = f"{ray.util.get_node_ip_address()} node {context.get_node_id()[:8]}"
    # a Ray worker may run on any core of its node: its torch threads are the CPUs Ray gave it
    config["train"]["threads"] = int(config["train"].get("threads") or 0) or ray_cpus(config)
    started = time.monotonic()
    summary = run_fold_job(root, run, fold, config=config, device=device, where=where)
    return {**summary, "task_seconds": round(time.monotonic() - started, 3), "where": where}


def _write_marker(path: str, token: str) -> dict:
    """Runs once on every node: write the shared-storage marker the driver must read back."""
    import ray

    target = Path(path)
    where = ray.util.get_node_ip_address()
    if not target.parent.parent.is_dir():
        return {"where": where, "error": f"{target.parent.parent} does not exist there"}
    target.parent.mkdir(exist_ok=True)
    target.write_text(token)
    return {"where": where, "error": ""}


def _prepare_node(path: str, token: str, warm: bool) -> dict:
    """A storage-check task (RayRunner.start_check): the marker, then with warm the imports a
    fold needs, so that this worker is warm when a fold task reuses it."""
    answer = _write_marker(path, token)
    if warm and not answer["error"]:
        for module in WARM_MODULES:
            importlib.import_module(module)
    return answer


def ray_cpus(config: dict) -> int:
    """CPUs a fold's task asks Ray for: train.threads, at least 1."""
    return max(1, int(config["train"].get("threads") or 0))


class RayRunner:
    """Trains the folds of a run as Ray tasks on a cluster (or on one Ray started for the call)."""

    def __init__(
        self,
        config,
        address: str = "auto",
        *,
        echo: Echo | None = None,
        retries: int = RETRIES,
        runs_dir: Path | None = None,
    ) -> None:
        """runs_dir: the competition's runs/; given, the storage check (markers there) and the
        workers' warm-up start now (start_check), while the driver creates the run."""
        self.config, self.address, self.echo, self.retries = config, address, echo, retries
        ray = _ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        runtime_env = {
            "py_modules": [str(Path(kit.__file__).parent)],  # the driver's kit runs on every node
            "env_vars": dict(FOLD_ENV),
        }
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        self.owned = not ray.is_initialized()  # a notebook's own ray.init() is used as it is
        self.temp_dir: str | None = None  # a /tmp folder this runner made for a local Ray
        if self.owned and address == "local":
            temp = short_temp_dir()
            self.temp_dir = None if temp.startswith(str(kit_home())) else temp
            local_ray_auth()
            ray.init(
                num_cpus=usable_cores(),
                include_dashboard=False,
                _temp_dir=temp,
                runtime_env=runtime_env,
                **quiet,
            )
        elif self.owned:
            if address != "auto":
                _check_listening(address)
            try:
                ray.init(address=address, runtime_env=runtime_env, **quiet)
            except ConnectionError as error:
                raise KitError(f"--cluster {address}: {error}") from None
        self.ray = ray
        self._task = None  # the fold task as a Ray remote function, made once
        self.shared_nodes: list[str] | None = None  # nodes that passed the storage check
        self._check: dict | None = None  # the storage check started early (root given)
        try:
            self.device = self._fold_device()
            if runs_dir is not None:
                Path(runs_dir).mkdir(parents=True, exist_ok=True)
                self._check = self.start_check(Path(runs_dir), warm=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._check is not None:  # made but never trained: stop the warm-up, drop markers
            for ref, path in self._check["refs"].items():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
                path.unlink(missing_ok=True)
            self._check = None
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        if self.temp_dir is not None:  # nothing of a local Ray stays outside KIT_HOME
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _fold_device(self) -> str:
        """'cuda' (a GPU per fold) or 'cpu'; a device the cluster lacks fails now, not in a hang."""
        wanted = self.config.train.device
        nodes = self.nodes()
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        need = ray_cpus(self.config.to_dict())
        if cpus < need:
            raise ConfigError(
                f"train.threads {need} asks each fold for {need} CPUs but the largest node of "
                f"the Ray cluster has {cpus:g}: lower train.threads"
            )
        if wanted.startswith("cuda") and gpus < 1:
            raise ConfigError(
                f"train.device {wanted!r} asks each fold for a GPU but the Ray cluster "
                f"({len(nodes)} node(s), {sum(n['Resources'].get('CPU', 0) for n in nodes):g} "
                'CPUs) has none: set train.device = "cpu" or "auto", or add GPU nodes'
            )
        if wanted not in ("auto", "cpu") and not wanted.startswith("cuda"):
            raise ConfigError(f"train.device {wanted!r}: a Ray cluster trains on cuda or cpu")
        return "cuda" if gpus >= 1 and wanted != "cpu" else "cpu"

    def check_shared(self, folder: Path) -> list[str]:
        """Every node writes a marker into folder; the driver must read each one back."""
        return self.finish_check(self.start_check(folder))

    def start_check(self, folder: Path, *, warm: bool = False) -> dict:
        """Start the storage check: a task per node writes a marker under folder/.cluster-check.

        warm: as many tasks per node as it has fold slots, each with a fold's resources, and
        each imports what a fold imports once its marker is written; a fold task (same
        resources, same job) then gets one of those warm workers instead of starting a cold
        one, so a run pays no worker start or torch/timm import per slot. Started when the
        runner is made, it overlaps the driver's own checks and the run's creation.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        prepare = self.ray.remote(max_retries=0)(_prepare_node)
        token = uuid.uuid4().hex
        cpus, gpus = ray_cpus(self.config.to_dict()), 1 if self.device == "cuda" else 0
        refs, nodes = {}, {}  # task ref -> marker path -> node id
        for node in self.nodes():
            resources = node["Resources"]
            slots = int(resources.get("GPU", 0) if gpus else resources.get("CPU", 0) // cpus)
            shape = {"num_cpus": cpus, "num_gpus": gpus} if warm and slots else {"num_cpus": 0}
            strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            for index in range(slots if warm and slots else 1):
                name = f"{token[:12]}-{node['NodeID'][:16]}-{index}.txt"
                path = folder / MARKERS_DIR / name
                task = prepare.options(scheduling_strategy=strategy, **shape)
                refs[task.remote(str(path), token, warm)] = path
                nodes[path] = node["NodeID"]
        return {"refs": refs, "nodes": nodes, "token": token, "folder": folder}

    def finish_check(self, check: dict) -> list[str]:
        """Wait for the storage check's tasks; the nodes that passed, or a KitError naming one
        that does not see the folder."""
        ray, refs, token, folder = self.ray, check["refs"], check["token"], check["folder"]
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=CHECK_TIMEOUT)
        seen: dict[str, str] = {}  # node id -> where (nodes of one host share its address)
        try:
            if late:
                raise KitError(
                    f"--cluster: {len(late)} node(s) did not answer the storage check "
                    f"in {CHECK_TIMEOUT:.0f}s: see `ray status`"
                )
            for ref in ready:
                answer, path = ray.get(ref), refs[ref]
                if answer["error"] or not path.exists() or path.read_text() != token:
                    why = answer["error"] or f"its marker {path} is not visible to the driver"
                    raise KitError(
                        f"--cluster: the competition folder is not shared with node "
                        f"{answer['where']} ({why}): put the folder holding {folder} on "
                        "storage every node mounts at the same path (NFS, Lustre, ...)"
                    )
                seen[check["nodes"][path]] = answer["where"]
        finally:
            for ref in late:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            for path in refs.values():
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (folder / MARKERS_DIR).rmdir()
        return list(seen.values())

    def slots(self, cpus: int = 0) -> int:
        """Folds the cluster trains at once: its GPUs, or its CPUs ÷ a fold's CPUs."""
        nodes = self.nodes()
        if self.device == "cuda":
            return int(sum(n["Resources"].get("GPU", 0) for n in nodes))
        cpus = cpus or ray_cpus(self.config.to_dict())
        return int(sum(n["Resources"].get("CPU", 0) for n in nodes) // cpus)

    def __call__(
        self, competition, run_dir: Path, folds: list[int], *, on_epoch=None
    ) -> Iterator[dict]:
        """Train `folds` as Ray tasks; yield each fold's summary as it finishes.
        on_epoch(event): each epoch event of log.jsonl, as in LocalRunner.__call__."""
        jobs = [Job(competition.root, run_dir, fold, competition.config) for fold in folds]
        yield from run_folds(self, run_dir, jobs, self.slots(), on_epoch)

    def _submit(self, job: Job):
        """Start one fold's Ray task, with the CPUs (and GPU) its run's config asks for."""
        config = (job.config or self.config).to_dict()
        gpus = 1 if self.device == "cuda" else 0
        largest = max((n["Resources"].get("CPU", 0) for n in self.nodes()), default=0)
        if ray_cpus(config) > largest:  # Ray would keep an infeasible task waiting forever
            raise ConfigError(
                f"{job.label()}: train.threads {ray_cpus(config)} asks for more CPUs than the "
                f"largest node of the Ray cluster has ({largest:g}): lower train.threads"
            )
        if self._task is None:
            self._task = self.ray.remote(_fold_task)
        task = self._task.options(
            num_cpus=ray_cpus(config),
            num_gpus=gpus,
            max_retries=self.retries,
            retry_exceptions=False,
        )
        return task.remote(str(job.root), job.run_dir.name, job.fold, config, self.device)

    def run_jobs(self, source: JobSource, poll: Callable[[], object] = lambda: None):
        """Train the jobs `source` gives as Ray tasks, all submitted as they come (Ray queues
        what the cluster cannot start yet), until it is sealed and empty; yield (job, summary)
        as each fold finishes. The storage check runs once, before the first task."""
        ray = self.ray
        refs: dict = {}  # task ref -> its job
        try:
            while refs or not source.exhausted:
                job = source.take()
                while job is not None:
                    if self.shared_nodes is None:
                        check = self._check or self.start_check(job.run_dir, warm=True)
                        self._check = None
                        self.shared_nodes = self.finish_check(check)
                        self._say_start(source, job)
                    refs[self._submit(job)] = job
                    job = source.take()
                if not refs:
                    poll()
                    time.sleep(POLL_SECONDS)
                    continue
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_SECONDS * 2)
                poll()
                for ref in ready:
                    job = refs.pop(ref)
                    yield job, self._result(ref, job.fold, job.run_dir)
            poll()
        finally:
            for ref in refs:  # an error or Ctrl-C: stop the folds still running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _say_start(self, source: JobSource, job: Job) -> None:
        if self.echo is None:
            return
        config = (job.config or self.config).to_dict()
        cpus, gpus = ray_cpus(config), 1 if self.device == "cuda" else 0
        self.echo(
            f"{source.describe()} as Ray tasks ({cpus} CPU"
            f"{f', {gpus} GPU' if gpus else ''} each) on {len(self.shared_nodes)} node(s): "
            f"{', '.join(self.shared_nodes)}"
        )

    def _result(self, ref, fold: int, run_dir: Path) -> dict:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, KitError):
                raise type(cause)(f"fold {fold}: {cause}") from None
            said = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
            raise KitError(f"fold {fold} failed on the cluster: {said.splitlines()[0]}") from None
        except ray.exceptions.RayError as error:  # the worker or its node died every retry
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise KitError(
                f"fold {fold}: its worker died {self.retries + 1} times ({first}); "
                f"continue with kit train --resume {run_dir.name} --cluster {self.address}"
            ) from None


def create_runner(
    target, *, parallel: str | None = None, cluster: str | None = None, echo: Echo | None = None
):
    """The runner for `kit train --parallel/--cluster` (a context manager), or a null context.

    target: the Competition (its --parallel children start at once, while the run is created)
    or just its Config.
    """
    config, root = getattr(target, "config", target), getattr(target, "root", None)
    if parallel and cluster:
        raise KitError("give --parallel (folds side by side here) or --cluster (Ray), not both")
    if cluster:
        runs_dir = getattr(target, "runs_dir", None)
        return RayRunner(config, cluster, echo=echo, runs_dir=runs_dir)
    if parallel:
        return LocalRunner(config, parallel, root=root, echo=echo)
    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
