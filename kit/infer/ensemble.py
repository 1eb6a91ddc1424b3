"""Blending runs: the mean of their probabilities, on test and (when folds agree) on OOF."""

from __future__ import annotations

import json

import pandas as pd

from kit.competition import Competition
from kit.errors import KitError
from kit.submission import write_submission


def _read_predictions(competition: Competition, run: str, name: str) -> pd.DataFrame:
    path = competition.run_dir(run) / name
    if not path.exists():
        raise KitError(f"{path} not found: run `kit predict {run}` first")
    return pd.read_csv(path, dtype={"id": str})


def ensemble_runs(competition: Competition, runs: list[str], name: str) -> dict:
    """Average the runs' test.csv into submissions/<name>.csv; report the blend's OOF score."""
    from kit.data.folds import training_table
    from kit.train.cv import score_oof

    if not runs:
        raise KitError("name at least one run to ensemble")
    table, task = training_table(competition)
    columns = task.columns
    infos = [json.loads((competition.run_dir(r) / "run.json").read_text()) for r in runs]
    for run, info in zip(runs, infos, strict=True):
        if info["classes"] != list(task.classes):
            raise KitError(f"run '{run}' was trained on other classes than the data has now")
    tests = [_read_predictions(competition, r, "test.csv").set_index("id") for r in runs]
    for run, test in zip(runs, tests, strict=True):
        if set(test.index) != set(tests[0].index):
            raise KitError(f"run '{run}' predicted another set of test ids: `kit predict {run}`")
    blend = sum(t[columns] for t in tests) / len(tests)
    blend = blend.reset_index()
    path = write_submission(competition, blend, task, name)

    result = {"submission": str(path), "runs": runs, "cv": None}
    if len({info["folds_hash"] for info in infos}) == 1:
        oofs = []
        for run in runs:
            has_tta = (competition.run_dir(run) / "oof_tta.csv").exists()
            oofs.append(
                _read_predictions(competition, run, "oof_tta.csv" if has_tta else "oof.csv")
            )
        keys = oofs[0][["id", "fold"]]
        mean = sum(o[columns].to_numpy() for o in oofs) / len(oofs)
        blended = pd.concat([keys, pd.DataFrame(mean, columns=columns)], axis=1)
        result.update(score_oof(competition, blended, table, task))
    return result
