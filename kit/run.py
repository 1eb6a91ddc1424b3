"""A run: the one owner of runs/<name>/, the names of the files in it, and their states.

    runs/<run>/config.toml        the resolved config the run trained with
    runs/<run>/run.json           model, task, classes, folds hash, device, commit, start time
    runs/<run>/log.jsonl          one JSON event per line
    runs/<run>/fold<k>/best.pt    the best epoch's weights; last.pt while the fold trains
    runs/<run>/fold<k>/oof.csv    the fold's validation predictions; result.json once finished
    runs/<run>/oof.csv            id, fold, prediction columns (oof_tta.csv after `kit predict`)
    runs/<run>/test.csv           id, prediction columns (test_folds.csv: each fold alone)
    runs/<run>/metrics.json       cv, cv_std, folds, per_class (+ cv_tta, cv_by_view)
    runs/<run>/report.html        the run's report

No other module spells these names: it asks a Run (or a Fold) for the path.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.config import load_config
from kit.errors import KitError, examples
from kit.fileio import write_json
from kit.names import check_name, ensure_inside

if TYPE_CHECKING:
    import pandas as pd

    from kit.competition import Competition
    from kit.config import Config

CONFIG_NAME = "config.toml"
INFO_NAME = "run.json"
LOG_NAME = "log.jsonl"
OOF_NAME = "oof.csv"
OOF_TTA_NAME = "oof_tta.csv"
TEST_NAME = "test.csv"
TEST_FOLDS_NAME = "test_folds.csv"
METRICS_NAME = "metrics.json"
REPORT_NAME = "report.html"
FOLD_PREFIX = "fold"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
RESULT_NAME = "result.json"  # written last in a fold's folder: the fold is finished
LOCKS_DIR = ".locks"  # in runs/: <run>.lock is held by the process training the run


class RunState(enum.Enum):
    FINISHED = "finished"  # every fold finished
    TRAINING = "training"  # a process holds the run's lock now
    INTERRUPTED = "interrupted"  # stopped with folds to go: kit train --resume RUN
    FAILED = "failed"  # stopped before its first epoch ended: the name is free again


class FoldState(enum.Enum):
    FINISHED = "finished"  # result.json written: best.pt is the fold's final model
    INTERRUPTED = "interrupted"  # a checkpoint exists but the fold did not finish
    MISSING = "missing"  # never started


@dataclass(frozen=True)
class Fold:
    """runs/<run>/fold<k>/: its checkpoints, its OOF part and its state."""

    run_dir: Path
    index: int

    @property
    def dir(self) -> Path:
        return self.run_dir / f"{FOLD_PREFIX}{self.index}"

    @property
    def best(self) -> Path:
        return self.dir / BEST_NAME

    @property
    def last(self) -> Path:
        return self.dir / LAST_NAME

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT_NAME

    @property
    def oof_path(self) -> Path:
        return self.dir / OOF_NAME

    @property
    def state(self) -> FoldState:
        if self.result_path.exists():
            return FoldState.FINISHED
        if self.last.exists() or self.best.exists():
            return FoldState.INTERRUPTED
        return FoldState.MISSING

    @property
    def finished(self) -> bool:
        return self.state is FoldState.FINISHED

    def result(self) -> dict[str, Any]:
        return json.loads(self.result_path.read_text())


@dataclass(frozen=True)
class Run:
    """runs/<name>/ of a competition. `Run.open` finds an existing run; `Run(...)` names one."""

    competition: Competition
    name: str

    def __post_init__(self):
        check_name(self.name, "run")

    @classmethod
    def open(cls, competition: Competition, name: str) -> Run:
        """An existing run (its config.toml written), or a KitError listing the runs there."""
        run = cls(competition, name)
        if not run.exists:
            known = known_runs(competition)
            hint = f"runs here: {', '.join(known)}" if known else "train one with `kit train`"
            raise KitError(f"run '{name}' not found in {competition.runs_dir}: {hint}")
        ensure_inside(run.dir, competition.root)
        return run

    # -- paths
    @property
    def dir(self) -> Path:
        return self.competition.runs_dir / self.name

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_NAME

    @property
    def info_path(self) -> Path:
        return self.dir / INFO_NAME

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_NAME

    @property
    def oof_path(self) -> Path:
        return self.dir / OOF_NAME

    @property
    def oof_tta_path(self) -> Path:
        return self.dir / OOF_TTA_NAME

    @property
    def test_path(self) -> Path:
        return self.dir / TEST_NAME

    @property
    def test_folds_path(self) -> Path:
        return self.dir / TEST_FOLDS_NAME

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_NAME

    @property
    def report_path(self) -> Path:
        return self.dir / REPORT_NAME

    # -- state
    @property
    def exists(self) -> bool:
        return self.config_path.exists()

    def fold(self, k: int) -> Fold:
        return Fold(self.dir, int(k))

    def fold_indices(self) -> list[int]:
        """The folds with a folder in the run, in order."""
        prefix = len(FOLD_PREFIX)
        found = [p.name[prefix:] for p in self.dir.glob(f"{FOLD_PREFIX}*") if p.is_dir()]
        return sorted(int(k) for k in found if k.isdigit())

    def finished_folds(self, folds: list[int] | None = None) -> list[int]:
        return [
            k
            for k in (folds if folds is not None else self.fold_indices())
            if self.fold(k).finished
        ]

    @property
    def lock_path(self) -> Path:
        return self.competition.runs_dir / LOCKS_DIR / f"{self.name}.lock"

    @property
    def has_progress(self) -> bool:
        """Whether any epoch of the run ended: a checkpoint, a finished fold or a logged epoch."""
        folds = f"{FOLD_PREFIX}*"
        if any(self.dir.glob(f"{folds}/*.pt")) or any(self.dir.glob(f"{folds}/{RESULT_NAME}")):
            return True
        try:
            return self.log_path.exists() and '"event": "epoch"' in self.log_path.read_text(
                errors="replace"
            )
        except OSError:
            return True  # unreadable: keep it, the user decides

    @property
    def is_training(self) -> bool:
        """Another process holds the run's lock now."""
        if not self.lock_path.exists():
            return False
        try:
            handle = _try_lock(self.lock_path)
        except OSError:
            return True  # cannot tell: never treat it as free
        if handle is None:
            return True
        handle.close()
        return False

    @property
    def is_dead(self) -> bool:
        """Stopped before its first epoch ended and no process trains it now: the name is free."""
        return not self.has_progress and not self.is_training

    def state(self, complete: bool) -> RunState:
        """complete: every fold finished (the ledger's word, from metrics.json)."""
        if complete:
            return RunState.FINISHED
        if self.is_training:
            return RunState.TRAINING
        return RunState.INTERRUPTED if self.has_progress else RunState.FAILED

    def claim(self, *, new: bool):
        """Hold the run's lock (runs/.locks/<run>.lock) for this process; for a new run, create
        runs/<run>/ under it.

        The lock is taken first, so of two processes starting the same name at once exactly one
        goes on; the other is told the run is being trained. Under the lock, an existing folder
        with no finished epoch belongs to a process that died before its first epoch: it is
        removed and the name reused. Returns the lock file; closing it releases the lock."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = _try_lock(self.lock_path)
        if handle is None:
            raise KitError(
                f"run '{self.name}' is being trained by another process now: wait for it, or "
                "train under another --name"
            )
        if not new:
            return handle
        try:
            if self.dir.exists():
                if self.has_progress:
                    raise KitError(
                        f"run '{self.name}' exists in {self.dir}: choose another --name, or "
                        f"--resume {self.name}"
                    )
                parked = Path(tempfile.mkdtemp(dir=self.dir.parent, prefix=f".{self.name}.dead-"))
                os.replace(self.dir, parked / self.name)  # a run that died before its first epoch
                shutil.rmtree(parked, ignore_errors=True)
            self.dir.mkdir()
        except BaseException:
            handle.close()
            raise
        return handle

    @property
    def has_predictions(self) -> bool:
        """`kit predict` has written test.csv."""
        return self.test_path.exists()

    # -- contents
    @property
    def info(self) -> dict[str, Any]:
        """run.json: what the run trained with (model, task, classes, folds hash, ...)."""
        return _read_json(self.info_path, "train the run again or remove its folder")

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def metrics(self) -> dict[str, Any]:
        return _read_json(self.metrics_path, f"finish it with: kit train --resume {self.name}")

    def write_info(self, info: dict[str, Any]) -> Path:
        return write_json(self.info_path, info)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return write_json(self.metrics_path, metrics)

    def update_metrics(self, **changes: Any) -> dict[str, Any]:
        """metrics.json with changes merged in, written atomically; returns the new content."""
        metrics = {**self.metrics, **changes}
        self.write_metrics(metrics)
        return metrics

    def oof(self, *, tta: bool = True) -> Path:
        """The OOF table to judge the run by: with its TTA views when `kit predict` wrote them."""
        return self.oof_tta_path if tta and self.oof_tta_path.exists() else self.oof_path

    def read_oof(self, *, tta: bool = True) -> pd.DataFrame:
        return pd.read_csv(self.oof(tta=tta), dtype={"id": str})

    def read_test(self) -> pd.DataFrame:
        if not self.has_predictions:
            raise KitError(f"run '{self.name}' has no test predictions: kit predict {self.name}")
        return pd.read_csv(self.test_path, dtype={"id": str})


def _try_lock(path: Path):
    """The open, flock-ed file at path, or None when another process holds the lock."""
    handle = open(path, "a")  # noqa: SIM115 (held open for as long as the lock is)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def known_runs(competition: Competition) -> list[str]:
    """The names of the runs in runs/ (folders holding a config.toml)."""
    return sorted(p.parent.name for p in competition.runs_dir.glob(f"*/{CONFIG_NAME}"))


def read_predictions(path: Path, columns: list[str], run: str) -> pd.DataFrame:
    """A run's prediction table (id + columns as float32), or a KitError with the fix."""
    if not path.exists():
        raise KitError(f"{path} not found: run `kit predict {run}` first")
    frame = pd.read_csv(path, dtype={"id": str, **dict.fromkeys(columns, np.float32)})
    lacking = [c for c in ["id", *columns] if c not in frame.columns]
    if lacking:
        raise KitError(
            f"{path} lacks column(s) {', '.join(lacking)} (has {', '.join(frame.columns)}): "
            f"run `kit predict {run}` again"
        )
    return frame


def check_prediction_ids(path, ids: pd.Series, expected: pd.Series, against: str, run: str) -> None:
    """One line naming the file: duplicate, missing and extra ids (each with examples)."""
    if ids.equals(expected):
        return
    problems = []
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s): {examples(duplicated)}")
    missing = expected[~expected.isin(ids)]
    if len(missing):
        problems.append(f"{len(missing)} id(s) missing: {examples(missing)}")
    extra = ids[~ids.isin(expected)]
    if len(extra):
        problems.append(f"{len(extra)} id(s) not in {against}: {examples(extra)}")
    if problems:
        raise KitError(f"{path}: {'; '.join(problems)}: run `kit predict {run}` again")


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KitError(f"{path} is missing: {fix}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise KitError(f"{path} is not valid JSON ({error}): {fix}") from None
