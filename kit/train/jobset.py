"""A list of runs as one job set: `kit train --name a,b,c` and kit.toml's [[runs]] table.

Every (run, fold) is a job on one scheduler (kit.cluster's LocalRunner or RayRunner), so
`--parallel N` / `--cluster ...` keep all slots busy across runs instead of waiting for the
slowest fold of each run. Each run is still created, checked and assembled by
kit.train.cv.train_run exactly as if it were trained alone (its own thread in the driver, which
trains nothing itself), so its oof.csv, metrics.json and ledger row are those of a lone run at
the same train.threads.

Order of events: every name is checked (slug rule, not taken) before anything is written; then
each run claims its name and builds everything a late error could come from; only when every run
has done so does the first fold start. A run that fails there stops the set before any training.
A fold that fails later stops every run (the folds still running are stopped too); each run then
continues with `kit train --resume RUN`, as after any interrupted run.

Without --parallel/--cluster the runs train one after another in this process.
"""

from __future__ import annotations

import dataclasses
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kit.cluster import POLL_SECONDS, ClusterProgress, Job, JobSource, RayRunner, create_runner
from kit.competition import Competition
from kit.config import RunSpec, apply_overrides
from kit.errors import Interrupted, KitError
from kit.names import check_name
from kit.results import TrainResult
from kit.run import Run
from kit.train.cv import train_run

NAME_SEPARATOR = ","  # `--name a,b,c`


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a job set: its name and the competition with the run's own config."""

    name: str
    competition: Competition


def split_names(text: str | None) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c'] (one name -> a list of one)."""
    return [part.strip() for part in (text or "").split(NAME_SEPARATOR) if part.strip()]


def plan_runs(
    competition: Competition, names: list[str] | None = None, *, table: bool = False
) -> list[PlannedRun]:
    """The runs to train: `names` with the competition's config, or every [[runs]] entry with
    its overrides (table=True); every name checked and free, before anything is written."""
    if table and names:
        raise KitError("give --runs (the [[runs]] table of kit.toml) or --name a,b,c, not both")
    if table:
        specs = competition.config.runs
        if not specs:
            raise KitError(
                f"--runs: {competition.root / 'kit.toml'} has no [[runs]] table: add e.g. "
                '[[runs]] name = "r18" set = { "model.name" = "resnet18" }'
            )
    else:
        specs = [RunSpec(check_name(name)) for name in names or []]
    if not specs:
        raise KitError("no run to train: give --name a,b,c or --runs")
    seen: set[str] = set()
    planned = []
    for spec in specs:
        if spec.name in seen:
            raise KitError(f"--name: run {spec.name!r} is listed twice; names must differ")
        seen.add(spec.name)
        run = Run(competition, spec.name)
        if run.exists and not run.is_dead:
            raise KitError(
                f"run '{spec.name}' exists in {run.dir}: choose another name, or "
                f"kit train --resume {spec.name}"
            )
        config = competition.config
        if spec.overrides:
            config = apply_overrides(config, spec.overrides, spec.origins())
        planned.append(PlannedRun(spec.name, dataclasses.replace(competition, config=config)))
    return planned


def train_runs(
    competition: Competition,
    names: list[str] | None = None,
    *,
    table: bool = False,
    folds: list[int] | None = None,
    progress: bool = True,
    nproc: int = 1,
    parallel: str | None = None,
    cluster: str | None = None,
    echo=None,
    runner=None,
) -> list[TrainResult]:
    """Train a list of new runs (`names`, or kit.toml's [[runs]] with table=True) as one job
    set; return each run's TrainResult, in the listed order.

    parallel/cluster: as kit train's (kit.cluster); runner: such a scheduler built by the caller.
    Without either, the runs train one after another here, each as `kit train --name` would
    (nproc: each over DDP ranks).
    """
    planned = plan_runs(competition, names, table=table)
    if runner is None and not (parallel or cluster):
        return [
            train_run(
                run.competition, run.name, folds=folds, progress=progress, nproc=nproc, echo=echo
            )
            for run in planned
        ]
    if nproc > 1:
        raise KitError(
            "--nproc splits one fold over DDP ranks; --parallel/--cluster train folds side by "
            "side: choose one"
        )
    if runner is None:
        shown = echo if progress else None
        with create_runner(competition, parallel=parallel, cluster=cluster, echo=shown) as made:
            return JobSet(made, echo=shown).train(planned, folds=folds, progress=progress)
    return JobSet(runner, echo=echo if progress else None).train(
        planned, folds=folds, progress=progress
    )


class RunFeed:
    """What one run's train_run sees as its runner: it adds the run's folds to the job set and
    yields their summaries as the shared scheduler finishes them, reading the run's log.jsonl
    in its own thread (progress lines, the tracker's epoch scalars)."""

    def __init__(self, jobset: JobSet, name: str) -> None:
        self.jobset, self.name = jobset, name
        self.device = jobset.runner.device
        self.mailbox: queue.Queue = queue.Queue()  # summaries, or the error that stops the set
        self.jobs: list[Job] = []
        self.delivered = 0  # summaries yielded to train_run
        self.registered = threading.Event()  # claimed and checked; its folds are known
        self.done = threading.Event()  # its thread ended (trained, or failed)

    def __call__(
        self, competition, run_dir: Path, folds: list[int], *, on_epoch=None
    ) -> Iterator[dict]:
        config = competition.config
        jobs = [Job(competition.root, run_dir, fold, config) for fold in folds]
        view = ClusterProgress(
            run_dir,
            folds,
            config.train.epochs,
            config.metric.name,
            self.jobset.slots(),
            self.jobset.echo,
            on_epoch=on_epoch,
        )
        self.jobs = jobs
        if self.jobset.started.is_set():  # a sweep trial: its folds go to the scheduler now
            self.jobset.source.add(jobs)
        # else the job set adds them, in the listed runs' order, once every run is claimed
        self.registered.set()
        if not folds:
            return
        self.jobset.started.wait()
        left = len(folds)
        while left:
            try:
                item = self.mailbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                view.poll()
                continue
            if isinstance(item, BaseException):
                raise item
            view.poll()  # every epoch of the fold before its summary
            left -= 1
            self.delivered += 1
            yield item
        view.poll()

    def settle(self) -> None:
        """After the run stopped early (a pruned sweep trial): drop its folds not started yet
        and wait for those still training, so that its folder can go."""
        left = len(self.jobs) - self.delivered - self.jobset.source.discard(self.name)
        while left > 0:
            if isinstance(self.mailbox.get(), BaseException):
                return  # the set stopped: its folds are stopped too
            left -= 1


class JobSet:
    """Several runs' folds on one runner: a thread per run (train_run, which waits on its
    RunFeed), the runner's loop in the calling thread."""

    def __init__(
        self, runner, *, echo: Callable[[str], None] | None = None, expected: int = 0
    ) -> None:
        self.runner, self.echo = runner, echo
        self.source = JobSource(expected=expected)  # expected: folds planned (slot count)
        self.started = threading.Event()  # every run is claimed: training may begin
        self.feeds: dict[str, RunFeed] = {}

    def train(
        self, planned: list[PlannedRun], *, folds: list[int] | None, progress: bool
    ) -> list[TrainResult]:
        results: dict[str, TrainResult] = {}
        errors: dict[str, BaseException] = {}

        def body(run: PlannedRun, feed: RunFeed) -> None:
            try:
                results[run.name] = train_run(
                    run.competition, run.name, folds=folds, progress=progress, runner=feed
                )
            except BaseException as error:  # noqa: BLE001 - handed to the calling thread
                errors[run.name] = error
            finally:
                feed.done.set()

        threads = []
        for run in planned:
            feed = self.feeds[run.name] = RunFeed(self, run.name)
            thread = threading.Thread(target=body, args=(run, feed), name=f"kit-run-{run.name}")
            thread.start()
            threads.append(thread)
        try:
            while not all(f.registered.is_set() or f.done.is_set() for f in self.feeds.values()):
                time.sleep(POLL_SECONDS / 5)
            failed = [name for name, feed in self.feeds.items() if not feed.registered.is_set()]
            if failed:  # a run could not start (a taken name, a bad model): nothing trains
                self.stop(KitError(f"not started: run {failed[0]!r} failed before training"))
            else:
                for run in planned:
                    self.source.add(self.feeds[run.name].jobs)
                self.source.seal()
                self.started.set()
                self.serve()
        except KeyboardInterrupt:
            self.stop(KitError("interrupted"))
            for thread in threads:
                thread.join()
            names = " ".join(run.name for run in planned if run.name not in results)
            raise Interrupted(
                f"job set interrupted: continue each run with kit train --resume RUN ({names})"
            ) from None
        except BaseException as error:
            self.stop(KitError(f"stopped: {error}"))
            for thread in threads:
                thread.join()
            raise
        for thread in threads:
            thread.join()
        if not self.source.added:  # stopped before any fold started: leave no run folders
            for run in planned:
                if run.name not in errors or _is_stop(errors[run.name]):
                    _remove_unstarted(run)
        for run in planned:  # the first run's own error (a run that failed to start, a fold)
            if run.name in errors and not _is_stop(errors[run.name]):
                raise errors[run.name]
        for run in planned:
            if run.name in errors:
                raise errors[run.name]
        return [results[run.name] for run in planned]

    def slots(self) -> int:
        """Folds the runner trains at once (for a run's ETA)."""
        if isinstance(self.runner, RayRunner):
            return self.runner.slots()
        return len(self.runner.slots(max(1, self.source.expected)))

    def serve(self) -> None:
        """The runner's loop: hand each finished fold's summary to its run."""
        for job, summary in self.runner.run_jobs(self.source):
            self.feeds[job.run_dir.name].mailbox.put(summary)

    def feed(self, name: str) -> RunFeed:
        """A new run's feed, for a set that takes runs as they come (sweep trials)."""
        feed = self.feeds[name] = RunFeed(self, name)
        return feed

    def serve_in_thread(self) -> threading.Thread:
        """Run serve() in a thread until the source is sealed and empty; an error there stops
        every run of the set (and is kept in self.error)."""
        self.error: BaseException | None = None

        def body() -> None:
            try:
                self.serve()
            except BaseException as error:  # noqa: BLE001 - reported by the runs it stops
                self.error = error
                self.stop(KitError(str(error)))

        thread = threading.Thread(target=body, name="kit-scheduler", daemon=True)
        thread.start()
        return thread

    def stop(self, error: KitError) -> None:
        """Stop the set: no fold starts any more, each waiting run raises `error`."""
        self.source.drop()
        for feed in self.feeds.values():
            feed.mailbox.put(_Stop(str(error)))
        self.started.set()


def _remove_unstarted(run: PlannedRun) -> None:
    """A run of a set that stopped before training: its folder goes (no epoch ran in it)."""

    opened = Run(run.competition, run.name)
    if opened.dir.is_dir() and opened.is_dead:
        shutil.rmtree(opened.dir, ignore_errors=True)


class _Stop(KitError):
    """A run of the set stopped because another one, or its scheduler, failed."""


def _is_stop(error: BaseException) -> bool:
    return isinstance(error, _Stop)
