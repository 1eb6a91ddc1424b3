"""What the library's main calls return: small typed records the CLI renders (and prints --json).

Each record names the fields a caller reads; `metrics` / `card` / `raw` keep the whole artefact
(metrics.json, the blend card, the platform's answer) for the rest. Item access (`result["cv"]`)
reads the same flat dict as `to_dict()`, which is also the `--json` output, so code written
against the dicts of earlier releases keeps working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class _Record:
    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()


@dataclass(frozen=True)
class TrainResult(_Record):
    """A run after `kit train`: its CV over the folds it has (metrics.json)."""

    run: str
    run_dir: str
    metric: str
    cv: float
    cv_std: float
    folds: list[float]  # each finished fold's best score, in fold order
    complete: bool  # every fold of folds.csv finished
    missing_folds: list[int]
    metrics: dict[str, Any] = field(repr=False)  # the whole metrics.json

    @classmethod
    def from_metrics(cls, run: str, run_dir, metrics: dict[str, Any]) -> TrainResult:
        return cls(
            run=run,
            run_dir=str(run_dir),
            metric=metrics["metric"],
            cv=metrics["cv"],
            cv_std=metrics["cv_std"],
            folds=list(metrics["folds"]),
            complete=bool(metrics.get("complete", True)),
            missing_folds=list(metrics.get("missing_folds", [])),
            metrics=metrics,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "run_dir": self.run_dir, **self.metrics}


@dataclass(frozen=True)
class PredictResult(_Record):
    """A run after `kit predict`: test.csv, and the OOF score of each TTA view and of the merge."""

    run: str
    test_csv: str
    metric: str
    cv: float  # OOF without TTA
    cv_tta: float  # OOF with the kept views merged
    cv_by_view: dict[str, float]  # each candidate view alone, on OOF
    tta: list[str]  # the views kept
    merge: str
    fold_merge: str
    metrics: dict[str, Any] = field(repr=False)

    @classmethod
    def from_metrics(cls, run: str, test_csv, metrics: dict[str, Any]) -> PredictResult:
        return cls(
            run=run,
            test_csv=str(test_csv),
            metric=metrics["metric"],
            cv=metrics["cv"],
            cv_tta=metrics["cv_tta"],
            cv_by_view=dict(metrics["cv_by_view"]),
            tta=list(metrics["tta"]),
            merge=metrics["merge"],
            fold_merge=metrics["fold_merge"],
            metrics=metrics,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "test_csv": self.test_csv, **self.metrics}


@dataclass(frozen=True)
class BlendCard(_Record):
    """A blend after `kit ensemble`: its submission, members and OOF scores (blends/<name>/)."""

    name: str
    submission: str
    blend_dir: str
    runs: list[str]
    method: str
    metric: str
    cv: float | None  # blend OOF score (None when the members share no folds)
    cv_nested: float | None  # the same with every fitted choice made out of fold
    cv_before_decision: float | None
    members: list[dict[str, Any]]  # run, weight, cv
    decision: dict[str, Any]  # kind ("none", "offsets", ...) and values
    card: dict[str, Any] = field(repr=False)  # the whole card.json

    @classmethod
    def from_card(cls, card: dict[str, Any], *, submission, blend_dir, runs) -> BlendCard:
        return cls(
            name=card["name"],
            submission=str(submission),
            blend_dir=str(blend_dir),
            runs=list(runs),
            method=card["method"],
            metric=card["metric"],
            cv=card["cv"],
            cv_nested=card.get("cv_nested"),
            cv_before_decision=card.get("cv_before_decision"),
            members=list(card["members"]),
            decision=dict(card["decision"]),
            card=card,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "submission": self.submission,
            "runs": self.runs,
            "blend_dir": self.blend_dir,
            **self.card,
        }


@dataclass(frozen=True)
class SubmitResult(_Record):
    """A submission the platform accepted: its reference, status and public score when known."""

    ref: Any  # the platform's id of the submission
    status: str  # "complete" once scored, "pending" while the platform scores it
    public_score: float | None
    metric: str | None
    remaining_today: int | None  # submissions left in the platform's day, where it says
    raw: dict[str, Any] = field(repr=False)  # the platform's whole answer

    @classmethod
    def from_platform(cls, answer: dict[str, Any]) -> SubmitResult:
        score = answer.get("public_score")
        return cls(
            ref=answer.get("ref", answer.get("id")),
            status=answer.get("status") or ("complete" if score is not None else "pending"),
            public_score=score,
            metric=answer.get("metric"),
            remaining_today=answer.get("remaining_today"),
            raw=dict(answer),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)
