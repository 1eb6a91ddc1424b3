"""Test helpers: a tiny trained run, reading a run back (OOF, ledger row), running a notebook,
the processes that are running."""

from __future__ import annotations

import contextlib
import os

import pandas as pd
import pytest

from kit.competition import Competition
from kit.data.download import download
from kit.data.folds import make_folds
from kit.ledger import connect
from kit.scaffold import new_competition
from kit.train.cv import train_run


def read_oof(competition: Competition, run: str) -> pd.DataFrame:
    return pd.read_csv(competition.runs_dir / run / "oof.csv", dtype={"id": str}).set_index("id")


def ledger_row(competition: Competition, run: str) -> dict:
    with connect(competition) as db:
        cursor = db.execute("select * from runs where run = ?", (run,))
        names = [c[0] for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def trained_digits(root, overrides) -> Competition:
    """Run r1 trained on 150 digits under root (its own KIT_HOME), with the given --set values."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_HOME", str(root / "home"))
        competition = new_competition("digits", root / "competitions", example="digits")
        download(competition, limit=150)
        competition = Competition.load(competition.root, overrides)
        make_folds(competition)
        train_run(competition, "r1", progress=False)
    return competition


def notebook_outputs(path, timeout: int) -> list:
    """Execute the notebook at path in its own folder; every code cell's outputs, in order."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(notebook, timeout=timeout, resources=resources).execute()
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def running_pids() -> set[int]:
    """Running pids (zombies left out)."""
    running = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as handle:
                if handle.read().split(") ")[-1][0] != "Z":
                    running.add(int(entry))
    return running


def parent_of(pid: int) -> int:
    """Its parent's pid; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().split(") ")[-1].split()[1])
    except (OSError, ValueError):
        return 0
