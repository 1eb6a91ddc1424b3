"""Blending runs into a submission, judged on out-of-fold predictions.

Methods: mean of probabilities, rank average, geometric mean, or non-negative weights fitted on
OOF by hill climbing (Caruana: add, with repeats, the member that raises the OOF score most). What
is fitted on OOF (weights, the decision layer) is scored with nested cross-validation: for each
fold, fit on the other folds' OOF rows and score the held-out fold; all held-out rows are pooled.
Every blend leaves a card in blends/<name>/: members, weights, each member's CV, the correlation
of their OOF predictions, and the blend's CV (in-sample and nested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.errors import ConfigError, KitError
from kit.fileio import write_csv, write_json, write_text
from kit.infer.decision import Decision, fit_decision
from kit.infer.merge import merge
from kit.metrics import best_improvement
from kit.submission import write_submission

METHODS = ("mean", "rank", "gmean", "weights")


@dataclass
class Member:
    run: str
    info: dict  # run.json
    metrics: dict  # metrics.json ({} when absent)
    test: np.ndarray | None  # (n_test, C) in sample_submission's order
    oof_path: str


def _examples(values) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:3]) + (
        f" (+{len(values) - 3} more)" if len(values) > 3 else ""
    )


def _read_table(path, columns: list[str], run: str) -> pd.DataFrame:
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


def _check_ids(path, ids: pd.Series, expected: pd.Series, against: str, run: str) -> None:
    """One line naming the file: duplicate, missing and extra ids (each with examples)."""
    if ids.equals(expected):
        return
    problems = []
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s): {_examples(duplicated)}")
    missing = expected[~expected.isin(ids)]
    if len(missing):
        problems.append(f"{len(missing)} id(s) missing: {_examples(missing)}")
    extra = ids[~ids.isin(expected)]
    if len(extra):
        problems.append(f"{len(extra)} id(s) not in {against}: {_examples(extra)}")
    if problems:
        raise KitError(f"{path}: {'; '.join(problems)}: run `kit predict {run}` again")


def _load_members(competition: Competition, runs: list[str], task, sample_ids: pd.Series):
    members = []
    for run in runs:
        run_dir = competition.run_dir(run)
        info = json.loads((run_dir / "run.json").read_text())
        if members and info["classes"] != members[0].info["classes"]:
            raise KitError(
                f"run '{run}' was trained on classes {_examples(info['classes'])}, run "
                f"'{members[0].run}' on {_examples(members[0].info['classes'])}: blend runs of one "
                "class set (retrain one of them)"
            )
        if info["classes"] != list(task.classes):
            raise KitError(
                f"run '{run}' was trained on other classes than the data has now: retrain it"
            )
        path = run_dir / "test.csv"
        test = _read_table(path, task.columns, run)
        ids = test["id"]
        _check_ids(path, ids, sample_ids, "sample_submission", run)
        if not ids.equals(sample_ids):  # same ids in another order
            test = test.set_index("id").loc[sample_ids].reset_index()
        oof_path = run_dir / "oof_tta.csv"
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        members.append(
            Member(
                run, info, metrics, test[task.columns].to_numpy(np.float32),
                str(oof_path if oof_path.exists() else run_dir / "oof.csv"),
            )
        )  # fmt: skip
    return members


def _rank_table(values: np.ndarray, kind: str) -> np.ndarray:
    """Each column's ranks scaled to (0, 1]; multiclass rows renormalised to sum to 1."""
    order = values.argsort(axis=0, kind="stable")
    ranks = np.empty_like(values)
    np.put_along_axis(ranks, order, np.arange(1, len(values) + 1, dtype=float)[:, None], axis=0)
    ranks /= len(values)
    if kind in ("multiclass", "binary"):
        ranks /= ranks.sum(axis=1, keepdims=True)
    return ranks


def blend(stack: np.ndarray, method: str, kind: str, weights=None) -> np.ndarray:
    """(M, N, C) member tables -> (N, C) blend; rank tables are ranked beforehand."""
    how = "gmean" if method == "gmean" else "mean"
    out = merge(stack, how, kind, weights)
    if method == "rank" and kind in ("multiclass", "binary"):
        out = out / out.sum(axis=1, keepdims=True)
    return out


def hill_climb(stack: np.ndarray, method: str, kind: str, score, better, steps: int) -> np.ndarray:
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
            trials[i] = score(blend(stack, method, kind, trial))
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
) -> dict:
    """Blend the runs' test.csv into submissions/<name>.csv; report the blend's OOF CV (nested
    when anything was fitted) and write the blend card to blends/<name>/."""
    from kit.data.folds import training_table
    from kit.metrics import get_metric

    settings = competition.config.ensemble
    method = method or settings.method
    decide = settings.decide if decide is None else decide
    if method not in METHODS:
        raise ConfigError(f"ensemble.method {method!r} is unknown: use one of {', '.join(METHODS)}")
    if not runs:
        raise KitError("name at least one run to ensemble")
    if len(set(runs)) != len(runs):
        raise KitError(f"runs {', '.join(runs)}: a run is named twice; use --weights to favour it")
    if method == "weights" and weights is not None:
        raise KitError("--method weights fits the weights on OOF: drop --weights, or use mean")
    fixed = check_weights(weights, runs) if weights is not None else None
    table, task = training_table(competition)
    if method == "rank" and task.kind == "ordinal":
        raise ConfigError("ensemble.method rank cannot blend ordinal values: use mean")
    metric = get_metric(competition.config.metric.name, task.kind)
    sample_column = competition.config.submission.id_column
    sample_path = competition.path(competition.config.data.sample_submission)
    sample_ids = pd.read_csv(sample_path, dtype={sample_column: str}, usecols=[sample_column])
    sample_ids = sample_ids[sample_column].rename("id")
    members = _load_members(competition, runs, task, sample_ids)
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
        oofs = [_read_table(Path(m.oof_path), task.columns, m.run) for m in members]
        for member, oof in zip(members[1:], oofs[1:], strict=True):
            _check_ids(member.oof_path, oof["id"], oofs[0]["id"], members[0].oof_path, member.run)
        keys = oofs[0][["id", "fold"]]
        oof_stack = np.stack(
            [o.set_index("id").loc[keys["id"], task.columns].to_numpy(np.float64) for o in oofs]
        )
        targets = task.encode(table.set_index("id").loc[keys["id"], "target"])
        folds = keys["fold"].to_numpy()
    if method == "rank":
        test_stack = np.stack([_rank_table(t, task.kind) for t in test_stack])
        if oof_stack is not None:
            oof_stack = np.stack([_rank_table(t, task.kind) for t in oof_stack])

    def fit(rows: np.ndarray) -> tuple[np.ndarray | None, Decision]:
        def score(values):
            return metric.score(task, targets[rows], values)

        if method == "weights":
            w = hill_climb(
                oof_stack[:, rows], method, task.kind, score, metric.better,
                settings.hill_climb_steps,
            )  # fmt: skip
        else:
            w = fixed
        decision = Decision("none")
        if decide:
            blended = blend(oof_stack[:, rows], method, task.kind, w)
            decision = fit_decision(task, metric, targets[rows], blended)
        return w, decision

    w, decision = fixed, Decision("none")
    if oof_stack is not None:
        everything = np.ones(len(folds), dtype=bool)
        w, decision = fit(everything)
        raw = blend(oof_stack, method, task.kind, w)
        blended_oof = decision.apply(raw, task)
        report["cv_before_decision"] = metric.score(task, targets, raw)
        report["cv"] = metric.score(task, targets, blended_oof)
        if fitted and len(np.unique(folds)) > 1:  # one fold leaves nothing to fit on
            held_out = np.empty_like(raw)
            for fold in np.unique(folds):
                inner = folds != fold
                w_f, d_f = fit(inner)
                held_out[~inner] = d_f.apply(
                    blend(oof_stack[:, ~inner], method, task.kind, w_f), task
                )
            report["cv_nested"] = metric.score(task, targets, held_out)
        elif not fitted:
            report["cv_nested"] = report["cv"]  # nothing was fitted on OOF

    test_values = blend(test_stack, method, task.kind, w)
    submitted = pd.DataFrame(decision.apply(test_values, task), columns=task.columns)
    submitted.insert(0, "id", sample_ids.to_numpy())
    path = write_submission(competition, submitted, task, name)

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
    blend_dir = competition.root / "blends" / name
    if oof_stack is not None:
        oof = pd.DataFrame(blend(oof_stack, method, task.kind, w), columns=task.columns)
        write_csv(blend_dir / "oof.csv", pd.concat([keys.reset_index(drop=True), oof], axis=1))
    write_json(blend_dir / "card.json", card)
    write_text(blend_dir / "card.md", blend_card_markdown(card))
    return {"submission": str(path), "runs": runs, "blend_dir": str(blend_dir), **card}


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
