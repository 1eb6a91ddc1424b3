"""What the library's main calls return: small typed records the CLI renders (and prints --json).

Each record names the fields a caller reads; `metrics` / `card` / `raw` keep the whole artefact
(metrics.json, the blend card, the platform's answer) for the rest. Item access (`result["cv"]`)
reads the same flat dict as `to_dict()`, which is also the `--json` output, so code written
against the dicts of earlier releases keeps working.
"""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar


class _Record:
    @classmethod
    def _read(cls, artefact: dict[str, Any], whole: str, **given: Any):
        """The record whose fields other than `given` are artefact's values of the same name
        (copied, so the record does not share lists with it); `whole` keeps the artefact itself.
        A field with a default may be missing from the artefact (older runs lack it)."""
        values = dict(given, **{whole: artefact})
        for item in fields(cls):
            if item.name in values:
                continue
            if item.name in artefact:
                values[item.name] = copy.copy(artefact[item.name])
            elif item.default is MISSING and item.default_factory is MISSING:
                raise KeyError(item.name)
        return cls(**values)

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


class _RunRecord(_Record):
    """A run's record read from a metrics file: `run`, one path (PATH_FIELD) and the metrics."""

    PATH_FIELD: ClassVar[str]

    @classmethod
    def from_metrics(cls, run: str, path, metrics: dict[str, Any]):
        return cls._read(metrics, "metrics", run=run, **{cls.PATH_FIELD: str(path)})

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, self.PATH_FIELD: getattr(self, self.PATH_FIELD), **self.metrics}


@dataclass(frozen=True)
class TrainResult(_RunRecord):
    """A run after `kit train`: its CV over the folds it has (metrics.json)."""

    run: str
    run_dir: str
    metric: str
    cv: float
    cv_std: float
    folds: list[float]  # each finished fold's best score, in fold order
    metrics: dict[str, Any] = field(repr=False)  # the whole metrics.json
    complete: bool = True  # every fold of folds.csv finished (older runs: always)
    missing_folds: list[int] = field(default_factory=list)

    PATH_FIELD: ClassVar[str] = "run_dir"


@dataclass(frozen=True)
class PredictResult(_RunRecord):
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

    PATH_FIELD: ClassVar[str] = "test_csv"


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
    members: list[dict[str, Any]]  # run, weight, cv
    decision: dict[str, Any]  # kind ("none", "offsets", ...) and values
    card: dict[str, Any] = field(repr=False)  # the whole card.json
    cv_nested: float | None = None  # the same with every fitted choice made out of fold
    cv_before_decision: float | None = None

    @classmethod
    def from_card(cls, card: dict[str, Any], *, submission, blend_dir, runs) -> BlendCard:
        where = {"submission": str(submission), "blend_dir": str(blend_dir), "runs": list(runs)}
        return cls._read(card, "card", **where)

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
