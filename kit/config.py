"""The typed config of a competition: kit.toml, plus dotted `--set section.key=value` overrides.

Every field's unit or reason is written beside it in templates/competition/kit.toml; the defaults
here are the same recipe, so a kit.toml only needs the fields that differ.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from kit.choices import (
    Balance,
    BlendMethod,
    CacheFormat,
    FoldMerge,
    Layout,
    PlatformName,
    Schedule,
    SubmissionFormat,
    TaskType,
    ViewMerge,
)
from kit.errors import ConfigError, KitError
from kit.fileio import write_text
from kit.infer.views import check_view_names
from kit.metrics import get_metric
from kit.names import check_name
from kit.task import task_class

CONFIG_NAME = "kit.toml"


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, checked at load; every float must also be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violated(self, value: float) -> str | None:
        for bound, ok, words in (
            (self.ge, lambda b: value >= b, "at least"),
            (self.gt, lambda b: value > b, "above"),
            (self.le, lambda b: value <= b, "at most"),
            (self.lt, lambda b: value < b, "below"),
        ):
            if bound is not None and not ok(bound):
                return f"{words} {bound:g}"
        return None

    def describe(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else "(" + _bound(self.gt, "-inf")
        high = f"{self.le:g}]" if self.le is not None else _bound(self.lt, "inf") + ")"
        return f"{low}, {high}"


def _bound(value: float | None, infinite: str) -> str:
    return infinite if value is None else f"{value:g}"


def bounded(default: Any, **bounds: float) -> Any:
    """A numeric field whose value must lie within bounds (ge, gt, le, lt)."""
    return field(default=default, metadata={"range": Range(**bounds)})


@dataclass
class CompetitionSection:
    name: str = ""  # slug; names the local leaderboard entry and the Kaggle competition
    platform: PlatformName = "local"  # "local" (offline leaderboard here), "kaggle" or "host"
    source: str = ""  # what `kit download` fetches: "example:digits" or a Kaggle slug
    daily_limit: int = bounded(5, ge=1)  # submissions per UTC day, as Kaggle counts them
    host_url: str = ""  # the competition host's URL (platform "host"), e.g. "http://10.0.0.5:8800"


@dataclass
class DataSection:
    train_csv: str = "data/train.csv"  # one row per training image
    train_dir: str = "data/train"  # training images, named <id><image_ext>
    test_dir: str = "data/test"  # test images, named <id><image_ext>
    sample_submission: str = "data/sample_submission.csv"  # the format and id order to submit
    id_column: str = "id"  # column of train_csv that names the image
    target_column: str = "label"  # column of train_csv that holds the class
    image_ext: str = ".png"  # appended to ids to find files; ids that end with it are kept as is
    # how training labels are found: "csv" (train_csv rows), "folder_per_class"
    # (<train_dir>/<class>/<file>) or "path_regex" (label_regex on the path under train_dir)
    layout: Layout = "csv"
    target_columns: list[str] = field(default_factory=list)  # multilabel: train_csv's 0/1 columns
    label_regex: str = ""  # path_regex: regex on the path under train_dir; named groups
    label_template: str = "{label}"  # path_regex: the class, from the regex's named groups
    label_maps: list[dict] = field(default_factory=list)  # path_regex: {group, match, to} rewrites
    label_bins: list[dict] = field(default_factory=list)  # path_regex: {group, edges, names} bands
    classes: list[str] = field(default_factory=list)  # class order (class_index); [] sorts labels
    bbox_columns: list[str] = field(default_factory=list)  # x0,y0,x1,y1 px columns; crop before all
    preprocess: list[dict] = field(default_factory=list)  # fixed albumentations ops; cached
    cache: bool = False  # keep preprocessed images under cache/ so later epochs skip the decode
    cache_size: int = bounded(0, ge=0)  # px, side of cached images; 0 = train.image_size
    # "raw" uint8 (fastest), "png" (lossless) or "jpeg" (smallest)
    cache_format: CacheFormat = "raw"
    cache_quality: int = bounded(95, ge=1, le=100)  # cache_format "jpeg": JPEG quality
    skip_bad: bool = False  # leave out undecodable images (train --skip-bad) instead of failing
    # px (width x height): larger images are refused as decompression bombs; PIL's default
    max_pixels: int = bounded(178_956_970, ge=1)


@dataclass
class FoldsSection:
    n_splits: int = bounded(5, ge=2)  # k of stratified k-fold
    seed: int = 42  # shuffles before splitting; changing it changes folds.csv
    group_column: str = ""  # train_csv column whose rows share a fold (patient, person); "" none
    group_regex: str = ""  # or a regex on the path under train_dir; its first group is the group
    # byte-identical images always share a fold; true also joins near-identical ones (re-saved,
    # rescaled: perceptual hashes within 4 of 64 bits), at one decode per image
    near_duplicates: bool = False


@dataclass
class ModelSection:
    name: str = "test_resnet"  # any timm model name
    pretrained_file: str = ""  # local weights file; "" trains from random initialisation
    drop_rate: float = bounded(0.0, ge=0, lt=1)  # dropout before the classifier


@dataclass
class TrainSection:
    image_size: int = bounded(32, ge=8)  # px, side of the square network input
    epochs: int = bounded(15, ge=1)  # passes over the fold's training part
    batch_size: int = bounded(64, ge=1)  # images per optimiser step
    lr: float = bounded(3e-3, gt=0)  # peak learning rate of AdamW
    weight_decay: float = bounded(0.05, ge=0)  # AdamW decoupled weight decay
    warmup_epochs: float = bounded(1.0, ge=0)  # linear warm-up before the cosine decay, in epochs
    label_smoothing: float = bounded(0.1, ge=0, lt=1)  # cross-entropy target smoothing
    seed: int = 0  # torch / numpy seed; fold k uses seed + k
    # DataLoader worker processes; "auto" = what `kit bench data --write` measured on this machine
    # (unmeasured: cores - 1, at most 8, on a GPU; 0 on a CPU); 0 decodes in the training process
    num_workers: int | Literal["auto"] = bounded("auto", ge=0)
    # torch threads per process; 0 = cores / (ranks x (workers + 1))
    threads: int = bounded(0, ge=0)
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16)
    channels_last: bool = True  # NHWC (faster convolutions): CUDA training; prediction anywhere
    schedule: Schedule = "cosine"  # "cosine" (linear warm-up, cosine decay) or "onecycle"
    accumulate: int = bounded(1, ge=1)  # batches whose gradients add up before one optimiser step
    # max gradient L2 norm, after unscaling; 0 = no clipping
    clip_grad_norm: float = bounded(0.0, ge=0)
    # EMA of the weights per step (e.g. 0.999), scored beside them; 0 = off
    ema_decay: float = bounded(0.0, ge=0, lt=1)
    mixup_alpha: float = bounded(0.0, ge=0)  # Beta(alpha, alpha) mixup of image pairs; 0 = off
    # Beta(alpha, alpha) cutmix boxes; 0 = off (both on: one per batch)
    cutmix_alpha: float = bounded(0.0, ge=0)
    # mixup/cutmix stop from this epoch on (clean last epochs); 0 = never
    mix_until_epoch: int = bounded(0, ge=0)
    balance: Balance = "none"  # "none", "sampler" (class-balanced draws) or "loss" (class weights)
    pseudo: str = ""  # stage 2: also train on pseudo/<name>/labels.csv (`kit pseudo`); "" = off
    # share of a training image's target from its OOF soft label
    pseudo_weight: float = bounded(0.5, ge=0, le=1)
    # epochs that train only the classifier head before unfreezing all
    freeze_epochs: int = bounded(0, ge=0)
    # early stopping: epochs without a better metric; 0 = train every epoch
    patience: int = bounded(0, ge=0)
    # optimiser steps between last.pt saves; 0 = at each epoch's end
    checkpoint_every: int = bounded(0, ge=0)
    deterministic: bool = False  # deterministic kernels (exact resume on CPU; slower on GPU)


@dataclass
class AugmentSection:
    # albumentations transforms by class name with their arguments, applied after the resize to
    # image_size; normalisation happens on the device, so the pipeline works on uint8 images.
    train: list[dict] = field(
        default_factory=lambda: [
            {
                "name": "Affine",
                "scale": [0.9, 1.1],
                "translate_percent": [-0.08, 0.08],
                "rotate": [-10, 10],
                "p": 1.0,
            }
        ]
    )
    valid: list[dict] = field(default_factory=list)


@dataclass
class PredictSection:
    # test-time views, each made from the decoded image in one batch; digits are not
    # flip-invariant, so the default views are small shifts.
    tta: list[str] = field(
        default_factory=lambda: ["identity", "shift:1,0", "shift:-1,0", "shift:0,1", "shift:0,-1"]
    )
    batch_size: int = bounded(256, ge=1)  # images per forward pass (each expands to len(tta) views)
    auto: bool = False  # keep only the views of tta that raise the OOF score (greedy)
    # how views merge: "mean" of probabilities or "gmean" (geometric mean)
    merge: ViewMerge = "mean"
    fold_merge: FoldMerge = "prob"  # how folds merge on test: "prob" (mean) or "logit" (log space)
    forbid_views: list[str] = field(default_factory=list)  # views the task forbids, e.g. ["hflip"]


@dataclass
class EnsembleSection:
    # how `kit ensemble` blends runs: "mean", "rank" (rank average, for ranking metrics such as
    # AUC), "gmean" (geometric mean) or "weights" (non-negative weights hill-climbed on OOF)
    method: BlendMethod = "mean"
    decide: bool = False  # tune the decision layer (offsets, cut-points, thresholds) on OOF
    # method "weights": members added (with repeats) at most
    hill_climb_steps: int = bounded(25, ge=1)


@dataclass
class TaskSection:
    type: TaskType = "multiclass"  # multiclass, binary, multilabel or ordinal (see kit/task.py)


@dataclass
class MetricSection:
    # the competition's metric: selects the best epoch and drives early stopping
    name: str = "accuracy"


@dataclass
class SubmissionSection:
    id_column: str = "id"  # sample_submission's id column
    target_column: str = "label"  # sample_submission's prediction column
    # what the target column holds: "class_index", "class_name", "probability" (of positive_class)
    # or "probabilities" (one column per class or label, named as the class)
    format: SubmissionFormat = "class_index"
    positive_class: str = ""  # format "probability": the class whose probability is submitted


@dataclass
class KernelSection:
    owner: str = ""  # Kaggle username owning the kernel and its dataset; "" = the credentials' one
    slug: str = ""  # the kernel's Kaggle slug; "" = <competition>-<run>
    gpu: bool = False  # enable_gpu in kernel-metadata.json (internet is always off)
    # requirements missing from Kaggle's image, packed as wheels (pip download: needs the index)
    extra_wheels: list[str] = field(default_factory=list)


@dataclass
class SweepSection:
    # `kit sweep`: the search space, config key -> { low, high, log } (a number range; ints stay
    # ints) or { choices = [...] }, e.g. { "train.lr" = { low = 1e-4, high = 1e-2, log = true } }
    params: dict[str, dict] = field(
        default_factory=lambda: {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    )
    trials: int = bounded(20, ge=1)  # finished or pruned trials the study holds, over all calls
    timeout: float = bounded(0.0, ge=0)  # seconds before no new trial starts; 0 = no limit
    folds: int = bounded(0, ge=0)  # train only the first K folds per trial (faster); 0 = all
    prune: bool = True  # stop a trial whose fold score is below the median of earlier trials'
    seed: int = 0  # TPE sampler seed; the k-th call or process on a study uses seed + k


@dataclass
class TrackSection:
    # TensorBoard event files are always written (runs/<run>/tb/); MLflow is optional:
    # MLflow tracking URI ("file:mlruns" = under this folder, "http://..."); "" off
    mlflow: str = ""
    experiment: str = ""  # MLflow experiment name; "" = the competition's name


class RunList(tuple):
    """kit.toml's [[runs]]: its RunSpec entries in file order (a tuple, so a Config copies and
    compares by value; no annotations, so it is not mistaken for a section of keys)."""


@dataclass
class Config:
    competition: CompetitionSection = field(default_factory=CompetitionSection)
    data: DataSection = field(default_factory=DataSection)
    folds: FoldsSection = field(default_factory=FoldsSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    predict: PredictSection = field(default_factory=PredictSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    task: TaskSection = field(default_factory=TaskSection)
    metric: MetricSection = field(default_factory=MetricSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    kernel: KernelSection = field(default_factory=KernelSection)
    sweep: SweepSection = field(default_factory=SweepSection)  # `kit sweep`'s search
    track: TrackSection = field(default_factory=TrackSection)  # experiment tracking
    # [[runs]]: `kit train --runs` trains each entry as its own run, one job set (RunSpec)
    runs: RunList = field(default_factory=RunList)

    def to_dict(self) -> dict[str, Any]:
        """The sections of one run's config (a run's own config.toml has no [[runs]] list)."""
        data = dataclasses.asdict(self)
        data.pop("runs")
        return data


RUNS_KEY = "runs"  # kit.toml's [[runs]] array of tables
RUN_FIXED_SECTIONS = ("competition", "folds", "sweep", "track")  # shared by every run of a list


@dataclass(frozen=True)
class RunSpec:
    """One [[runs]] entry: a run name and the dotted overrides it trains with."""

    name: str  # the run's name (kit.names slug rule)
    overrides: dict[str, Any] = field(default_factory=dict)  # "section.key" -> value, as --set

    def origins(self) -> dict[str, str]:
        return {key: f'[[runs]] {self.name!r} set "{key}"' for key in self.overrides}


def apply_overrides(config: Config, overrides: dict[str, Any], origins: dict[str, str]) -> Config:
    """config with dotted `section.key` overrides applied, checked as kit.toml itself is."""
    raw = config.to_dict()
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    return config_from_dict(raw, origins=origins)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """{model = {name = "x"}} and {"model.name" = "x"} both give {"model.name": "x"}."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, out)
    else:
        out[prefix] = value


def _run_specs(entries: Any, base: Config, source: str) -> list[RunSpec]:
    """[[runs]] checked: each entry a table with a slug `name` and a `set` of config overrides
    that build a valid config; names unique."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(
            f"runs in {source} must be [[runs]] tables, e.g. "
            '[[runs]] name = "r18" set = { "model.name" = "resnet18" }'
        )
    specs, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"[[runs]] entry {index + 1} in {source}"
        unknown = sorted(set(entry) - {"name", "set"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; an entry has name and set")
        if not isinstance(entry.get("name"), str):
            raise ConfigError(f'{where}: needs name = "RUN", the run\'s name')
        try:
            name = check_name(entry["name"])
        except KitError as error:
            raise ConfigError(f"{where}: {error}") from None
        if name in seen:
            raise ConfigError(f"{where}: run name {name!r} is listed twice; names must differ")
        seen.add(name)
        if not isinstance(entry.get("set", {}), dict):
            raise ConfigError(
                f'{where} ({name}): set must be a table, e.g. {{ "train.lr" = 1e-3 }}'
            )
        overrides: dict[str, Any] = {}
        _flatten("", entry.get("set", {}), overrides)
        for key in overrides:
            section, _, key_name = key.partition(".")
            if not key_name or "." in key_name:
                raise ConfigError(f"{where} ({name}): set key {key!r} must be section.key")
            if not hasattr(base, section) or section == RUNS_KEY:
                raise ConfigError(f"{where} ({name}): set key {key!r}: no section [{section}]")
            if section in RUN_FIXED_SECTIONS:
                raise ConfigError(
                    f"{where} ({name}): set key {key!r}: [{section}] is shared by every run"
                )
        spec = RunSpec(name, overrides)
        apply_overrides(base, overrides, spec.origins())  # a bad value fails at load
        specs.append(spec)
    return specs


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(options)}"


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(True, value converted to the annotated type) or (False, None)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return (value in get_args(annotation), value)
    if origin in (Union, types.UnionType):
        for arm in get_args(annotation):
            ok, converted = _convert(value, arm)
            if ok:
                return ok, converted
        return False, None
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if annotation is str:
        return isinstance(value, str), value
    if origin is list:
        (item_type,) = get_args(annotation)
        item_origin = get_origin(item_type) or item_type
        ok = isinstance(value, list) and all(isinstance(item, item_origin) for item in value)
        return ok, value
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    return True, value  # a type this loader does not know: the section checks it


def _check_value(where: str, value: Any, annotation: Any, fix: str = "fix it in kit.toml") -> Any:
    """Return value converted to the annotated type, or raise ConfigError naming the field."""
    ok, converted = _convert(value, annotation)
    if ok:
        return converted
    if get_origin(annotation) is Literal and isinstance(value, str):
        options = [str(v) for v in get_args(annotation)]
        raise ConfigError(f"{where} {value!r} is unknown: {_suggest(value, options)}; {fix}")
    raise ConfigError(
        f"{where} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}; {fix}"
    )


def check_choice(where: str, value: Any, kind: Any, fix: str = "use one of the choices") -> Any:
    """value if it is one of kind's choices (a library call's override of a config value)."""
    return _check_value(where, value, kind, fix)


def _check_range(where: str, value: Any, bounds: Range | None, fix: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} {value} must be a finite number; {fix}")
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    broken = bounds.violated(value)
    if broken:
        two_sided = {bounds.ge, bounds.gt} != {None} and {bounds.le, bounds.lt} != {None}
        rule = f"in {bounds.describe()}" if two_sided else broken
        raise ConfigError(f"{where} {value:g} must be {rule}; {fix}")


def _apply(section: Any, values: dict[str, Any], where: str, origins: dict[str, str]) -> None:
    hints = get_type_hints(type(section))
    fields = {f.name: f for f in dataclasses.fields(section)}
    for key, value in values.items():
        dotted = f"{where}.{key}"
        if key not in hints:
            raise ConfigError(
                f"unknown key '{dotted}' in {origins.get(dotted, 'kit.toml')}: "
                f"{_suggest(key, list(fields))}"
            )
        fix = f"fix {origins[dotted]}" if dotted in origins else "fix it in kit.toml"
        converted = _check_value(dotted, value, hints[key], fix)
        _check_range(dotted, converted, fields[key].metadata.get("range"), fix)
        setattr(section, key, converted)


def config_from_dict(
    raw: dict[str, Any], source: str = "kit.toml", origins: dict[str, str] | None = None
) -> Config:
    """A checked Config: types, choices, ranges, then the rules that join fields.

    origins maps 'section.key' to where a value came from when it is not the file itself
    (e.g. '--set train.lr=nan'), so a message says which one to fix.
    """
    config = Config()
    origins = origins or {}
    sections = [f.name for f in dataclasses.fields(config) if f.name != RUNS_KEY]
    run_entries = raw.get(RUNS_KEY)
    raw = {name: values for name, values in raw.items() if name != RUNS_KEY}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown section [{name}] in {source}: {_suggest(name, sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] in {source} must be a table of keys")
        _apply(getattr(config, name), values, name, origins)
    check_rules(config, origins)
    if run_entries is not None:
        config.runs = RunList(_run_specs(run_entries, config, source))
    return config


def check_rules(config: Config, origins: dict[str, str] | None = None) -> None:
    """Rules that join fields or need a module's own table (metrics, TTA views)."""
    origins = origins or {}

    def fix(*keys: str) -> str:
        named = [origins[k] for k in keys if k in origins]
        return f"fix {named[0]}" if named else "fix it in kit.toml"

    try:
        get_metric(config.metric.name, config.task.type)
    except ConfigError as error:
        raise ConfigError(f"{error}; {fix('metric.name', 'task.type')}") from None
    try:
        check_view_names(config.predict.tta, config.predict.forbid_views)
    except ConfigError as error:
        raise ConfigError(f"{error}; {fix('predict.tta', 'predict.forbid_views')}") from None

    try:
        task_class(config.task.type).check_submission_format(config.submission.format)
    except ConfigError as error:
        raise ConfigError(f"{error}; {fix('submission.format', 'task.type')}") from None
    if config.data.target_columns and config.task.type != "multilabel":
        raise ConfigError(
            'data.target_columns is for task.type = "multilabel"; set task.type or remove them; '
            + fix("data.target_columns", "task.type")
        )
    if config.data.layout == "path_regex" and not config.data.label_regex:
        raise ConfigError(
            'data.layout "path_regex" needs data.label_regex (named groups); '
            + fix("data.layout", "data.label_regex")
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); values are TOML, bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write it as section.key=value, e.g. train.epochs=3")
    dotted, raw_value = text.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"--set {text!r}: the key must be section.key, e.g. train.epochs")
    try:
        value = tomllib.loads(f"v = {raw_value}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value  # a bare word such as resnet18 means the string
    return keys, value


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read kit.toml at path and apply `section.key=value` overrides in order."""
    if not path.exists():
        raise ConfigError(
            f"{path} not found: run inside a competition folder, pass -C DIR, or `kit new NAME`"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error}); fix the line it names") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (a binary file?): restore kit.toml") from None
    origins: dict[str, str] = {}
    for text in overrides:
        (section, key), value = parse_override(text)
        section_values = raw.setdefault(section, {})
        if not isinstance(section_values, dict):
            raise ConfigError(f"--set {text!r}: [{section}] in {path} is not a table of keys")
        section_values[key] = value
        origins[f"{section}.{key}"] = f"--set {text}"
    return config_from_dict(raw, source=str(path), origins=origins)


def dump_toml(data: dict[str, Any]) -> str:
    """Write a two-level dict of plain values as TOML (enough for Config.to_dict())."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    """A bare key, or a quoted one: "train.lr" unquoted would be read back as a nested table."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else toml_value(key)


def set_toml_value(path: Path, section: str, key: str, value: str, by: str = "kit") -> str:
    """Rewrite `key = value` inside [section] of a kit.toml, keeping its comment; the new line.

    value is TOML text (see toml_value); a new line is marked as set by `by`.
    """
    text = path.read_text()
    header = re.search(rf"^\[{re.escape(section)}\]\s*$", text, re.M)
    if header is None:
        text = text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
        write_text(path, text)
        return f"{key} = {value}"
    following = re.search(r"^\[", text[header.end() :], re.M)
    end = header.end() + following.start() if following else len(text)
    body = text[header.end() : end]
    line = re.compile(rf"^({re.escape(key)}\s*=\s*)([^#\n]*?)(\s*#.*)?$", re.M)
    if line.search(body):
        body = line.sub(lambda m: f"{m.group(1)}{value}{m.group(3) or ''}", body, count=1)
    else:
        body = body.rstrip("\n") + f"\n{key} = {value}  # set by {by}\n\n"
    write_text(path, text[: header.end()] + body + text[end:])
    return f"{key} = {value}"
