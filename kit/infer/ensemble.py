"""Blending runs into a submission, judged on out-of-fold predictions.

Methods: mean of probabilities, rank average, geometric mean, or non-negative weights fitted on
OOF by hill climbing (Caruana: add, with repeats, the member that raises the OOF score most). What
is fitted on OOF (weights, the decision layer) is scored with nested cross-validation: for each
fold, fit on the other folds' OOF rows and score the held-out fold; all held-out rows are pooled.
Every blend leaves a card in blends/<name>/: members, weights, each member's CV, the correlation
of their OOF predictions, and the blend's CV (in-sample and nested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.choices import BlendMethod, choices
from kit.competition import Competition
from kit.config import check_choice
from kit.data.folds import training_table
from kit.errors import ConfigError, KitError, examples
from kit.fileio import write_csv, write_json, write_text
from kit.infer.decision import Decision, fit_decision
from kit.infer.merge import merge
from kit.metrics import best_improvement, get_metric
from kit.results import BlendCard
from kit.run import OOF_NAME, check_prediction_ids, read_predictions
from kit.submission import read_sample, write_submission
from kit.task import Task

METHODS = choices(BlendMethod)


@dataclass
class Member:
    run: str
    info: dict  # run.json
    metrics: dict  # metrics.json ({} when absent)
    test: np.ndarray | None  # (n_test, C) in sample_submission's order
    oof_path: str


def check_finished(run_dir: Path, metrics: dict, finished_only: bool) -> None:
    """Refuse a run whose training stopped before every fold finished, unless finished_only."""
    if metrics.get("complete", True) or finished_only:
        return
    run = run_dir.name
    raise KitError(
        f"run '{run}' is unfinished (folds still to train: {metrics.get('missing_folds', '?')}): "
        f"finish it with `kit train --resume {run}`, or pass --finished-folds to blend the "
        "folds it has"
    )


def _load_members(
    competition: Competition,
    runs: list[str],
    task,
    sample_ids: pd.Series,
    finished_only: bool = False,
):
    members = []
    for run in runs:
        opened = competition.run(run)
        metrics = opened.metrics if opened.metrics_path.exists() else {}
        check_finished(opened.dir, metrics, finished_only)
        info = opened.info
        if members and info["classes"] != members[0].info["classes"]:
            raise KitError(
                f"run '{run}' was trained on classes {examples(info['classes'])}, run "
                f"'{members[0].run}' on {examples(members[0].info['classes'])}: blend runs of one "
                "class set (retrain one of them)"
            )
        if info["classes"] != list(task.classes):
            raise KitError(
                f"run '{run}' was trained on other classes than the data has now: retrain it"
            )
        path = opened.test_path
        test = read_predictions(path, task.columns, run)
        ids = test["id"]
        check_prediction_ids(path, ids, sample_ids, "sample_submission", run)
        if not ids.equals(sample_ids):  # same ids in another order
            test = test.set_index("id").loc[sample_ids].reset_index()
        members.append(
            Member(run, info, metrics, test[task.columns].to_numpy(np.float32), str(opened.oof()))
        )
    return members


def blend(stack: np.ndarray, method: str, task: Task, weights=None) -> np.ndarray:
    """(M, N, C) member tables -> (N, C) blend; rank tables are ranked beforehand."""
    how = "gmean" if method == "gmean" else "mean"
    out = merge(stack, how, task, weights)
    return task.renormalise(out) if method == "rank" else out


def hill_climb(stack: np.ndarray, method: str, task: Task, score, better, steps: int) -> np.ndarray:
    """Non-negative weights (counts / total): start from the best member, add the member that
    raises the OOF score most, with repeats, until none does or `steps` members are in."""
    m = len(stack)
    singles = [score(stack[i]) for i in range(m)]
    first = 0
    for i in range(1, m):
        if better(singles[i], singles[first]):
            first = i
    counts = np.zeros(m)
    counts[first] = 1
    best = singles[first]
    for _ in range(steps - 1):
        trials = {}
        for i in range(m):
            trial = counts.copy()
            trial[i] += 1
            trials[i] = score(blend(stack, method, task, trial))
        pick = best_improvement(trials, best, better)
        if pick is None:
            break
        counts[pick] += 1
        best = trials[pick]
    return counts / counts.sum()


def check_weights(weights: list[float], runs: list[str]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if len(w) != len(runs):
        raise KitError(f"--weights gives {len(w)} weight(s) for {len(runs)} run(s): one per run")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise KitError(
            f"--weights {','.join(str(v) for v in weights)}: weights must be non-negative and "
            "sum to a positive number"
        )
    return w / w.sum()


def ensemble_runs(
    competition: Competition,
    runs: list[str],
    name: str,
    *,
    method: str | None = None,
    weights: list[float] | None = None,
    decide: bool | None = None,
    finished_only: bool = False,
) -> BlendCard:
    """Blend the runs' test.csv into submissions/<name>.csv; report the blend's OOF CV (nested
    when anything was fitted) and write the blend card to blends/<name>/. Unfinished runs are
    refused unless finished_only."""
    blend_dir = competition.blend_dir(name)

    settings = competition.config.ensemble
    method = method or settings.method
    decide = settings.decide if decide is None else decide
    check_choice("ensemble.method", method, BlendMethod)  # this call's; kit.toml's are checked
    if not runs:
        raise KitError("name at least one run to ensemble")
    if len(set(runs)) != len(runs):
        raise KitError(f"runs {', '.join(runs)}: a run is named twice; use --weights to favour it")
    if method == "weights" and weights is not None:
        raise KitError("--method weights fits the weights on OOF: drop --weights, or use mean")
    fixed = check_weights(weights, runs) if weights is not None else None
    table, task = training_table(competition, check_images=False)  # a blend reads no pixels
    if method == "rank" and not task.can_rank:
        raise ConfigError("ensemble.method rank cannot blend ordinal values: use mean")
    metric = get_metric(competition.config.metric.name, task.kind)
    sample_column = competition.config.submission.id_column
    sample_path = competition.path(competition.config.data.sample_submission)
    sample = read_sample(sample_path, sample_column)  # the ids; the other columns are not parsed
    sample_ids = sample[sample_column].rename("id")
    members = _load_members(competition, runs, task, sample_ids, finished_only)
    test_stack = np.empty((len(members), *members[0].test.shape), dtype=np.float32)
    for i, member in enumerate(members):
        test_stack[i], member.test = member.test, None  # one copy of the tables in memory

    same_folds = len({m.info["folds_hash"] for m in members}) == 1
    fitted = method == "weights" or decide
    if fitted and not same_folds:
        hashes = ", ".join(f"{m.run}: {m.info['folds_hash']}" for m in members)
        raise KitError(
            f"runs were trained on different folds ({hashes}): a blend fitted on their OOF "
            "would be scored on rows its members trained on; retrain on one folds.csv, or "
            "blend with --method mean and no --decide"
        )

    report: dict = {"cv": None, "cv_nested": None}
    oof_stack = None
    if same_folds:
        oofs = [read_predictions(Path(m.oof_path), task.columns, m.run) for m in members]
        for member, oof in zip(members[1:], oofs[1:], strict=True):
            check_prediction_ids(
                member.oof_path, oof["id"], oofs[0]["id"], members[0].oof_path, member.run
            )
        keys = oofs[0][["id", "fold"]]
        oof_stack = np.stack(
            [o.set_index("id").loc[keys["id"], task.columns].to_numpy(np.float64) for o in oofs]
        )
        targets = task.encode(table.set_index("id").loc[keys["id"], "target"])
        folds = keys["fold"].to_numpy()
    if method == "rank":
        test_stack = np.stack([task.rank_table(t) for t in test_stack])
        if oof_stack is not None:
            oof_stack = np.stack([task.rank_table(t) for t in oof_stack])

    def fit(rows: np.ndarray) -> tuple[np.ndarray | None, Decision]:
        def score(values):
            return metric.score(task, targets[rows], values)

        if method == "weights":
            w = hill_climb(
                oof_stack[:, rows],
                method,
                task,
                score,
                metric.better,
                settings.hill_climb_steps,
            )
        else:
            w = fixed
        decision = Decision("none")
        if decide:
            blended = blend(oof_stack[:, rows], method, task, w)
            decision = fit_decision(task, metric, targets[rows], blended)
        return w, decision

    w, decision = fixed, Decision("none")
    if oof_stack is not None:
        everything = np.ones(len(folds), dtype=bool)
        w, decision = fit(everything)
        raw = blend(oof_stack, method, task, w)
        blended_oof = decision.apply(raw, task)
        report["cv_before_decision"] = metric.score(task, targets, raw)
        report["cv"] = metric.score(task, targets, blended_oof)
        if fitted and len(np.unique(folds)) > 1:  # one fold leaves nothing to fit on
            held_out = np.empty_like(raw)
            for fold in np.unique(folds):
                inner = folds != fold
                w_f, d_f = fit(inner)
                held_out[~inner] = d_f.apply(blend(oof_stack[:, ~inner], method, task, w_f), task)
            report["cv_nested"] = metric.score(task, targets, held_out)
        elif not fitted:
            report["cv_nested"] = report["cv"]  # nothing was fitted on OOF

    test_values = blend(test_stack, method, task, w)
    submitted = pd.DataFrame(decision.apply(test_values, task), columns=task.columns)
    submitted.insert(0, "id", sample_ids.to_numpy())
    path = write_submission(competition, submitted, task, name, sample_ids=sample)

    weights_used = (np.full(len(runs), 1 / len(runs)) if w is None else w).tolist()
    card = {
        "name": name,
        "method": method,
        "metric": metric.name,
        "members": [
            {
                "run": m.run,
                "weight": weight,
                "cv": m.metrics.get("cv"),
                "cv_tta": m.metrics.get("cv_tta"),
                "folds_hash": m.info["folds_hash"],
            }
            for m, weight in zip(members, weights_used, strict=True)
        ],
        "oof_correlation": (
            np.corrcoef(oof_stack.reshape(len(members), -1)).round(4).tolist()
            if oof_stack is not None and len(members) > 1
            else None
        ),
        "decision": decision.to_dict(),
        **report,
        "submission": str(path),
    }
    if oof_stack is not None:
        oof = pd.DataFrame(blend(oof_stack, method, task, w), columns=task.columns)
        write_csv(blend_dir / OOF_NAME, pd.concat([keys.reset_index(drop=True), oof], axis=1))
    write_json(blend_dir / "card.json", card)
    write_text(blend_dir / "card.md", blend_card_markdown(card))
    return BlendCard.from_card(card, submission=path, blend_dir=blend_dir, runs=runs)


def blend_card_markdown(card: dict) -> str:
    def fmt(value) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = [
        f"# Blend {card['name']}",
        "",
        f"method {card['method']}; metric {card['metric']}; "
        f"CV {fmt(card['cv'])} (nested {fmt(card['cv_nested'])})",
        "",
        "| run | weight | CV | CV with TTA |",
        "|---|---|---|---|",
    ]
    for m in card["members"]:
        lines.append(f"| {m['run']} | {m['weight']:.3f} | {fmt(m['cv'])} | {fmt(m['cv_tta'])} |")
    if card["oof_correlation"]:
        runs = [m["run"] for m in card["members"]]
        lines += ["", "OOF correlation:", "", "| | " + " | ".join(runs) + " |"]
        lines.append("|---" * (len(runs) + 1) + "|")
        for run, row in zip(runs, card["oof_correlation"], strict=True):
            lines.append(f"| {run} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    decision = card["decision"]
    if decision["kind"] != "none":
        lines += [
            "",
            f"decision: {decision['kind']} {[round(v, 3) for v in decision['values']]}; "
            f"CV before {fmt(card.get('cv_before_decision'))}, after {fmt(card['cv'])}",
        ]
    return "\n".join(lines) + "\n"
