"""The typed config of a competition: kit.toml, plus dotted `--set section.key=value` overrides.

Every field's unit or reason is written beside it in templates/competition/kit.toml; the defaults
here are the same recipe, so a kit.toml only needs the fields that differ.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from kit.errors import ConfigError

CONFIG_NAME = "kit.toml"


@dataclass
class CompetitionSection:
    name: str = ""  # slug; names the local leaderboard entry and the Kaggle competition
    platform: str = "local"  # "local" (offline leaderboard on this machine) or "kaggle"
    source: str = ""  # what `kit download` fetches: "example:digits" or a Kaggle slug
    daily_limit: int = 5  # submissions per UTC day, as Kaggle counts them


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
    layout: str = "csv"
    target_columns: list[str] = field(default_factory=list)  # multilabel: train_csv's 0/1 columns
    label_regex: str = ""  # path_regex: regex on the path under train_dir; named groups
    label_template: str = "{label}"  # path_regex: the class, from the regex's named groups
    label_maps: list[dict] = field(default_factory=list)  # path_regex: {group, match, to} rewrites
    label_bins: list[dict] = field(default_factory=list)  # path_regex: {group, edges, names} bands
    classes: list[str] = field(default_factory=list)  # class order (class_index); [] sorts labels
    bbox_columns: list[str] = field(default_factory=list)  # x0,y0,x1,y1 px columns; crop before all
    preprocess: list[dict] = field(default_factory=list)  # fixed albumentations ops; cached
    cache: bool = False  # keep preprocessed images under cache/ so later epochs skip the decode
    cache_size: int = 0  # px, side of cached images; 0 = train.image_size
    skip_bad: bool = False  # leave out undecodable images (train --skip-bad) instead of failing


@dataclass
class FoldsSection:
    n_splits: int = 5  # k of stratified k-fold
    seed: int = 42  # shuffles before splitting; changing it changes folds.csv
    group_column: str = ""  # train_csv column whose rows share a fold (patient, person); "" none
    group_regex: str = ""  # or a regex on the path under train_dir; its first group is the group


@dataclass
class ModelSection:
    name: str = "test_resnet"  # any timm model name
    pretrained_file: str = ""  # local weights file; "" trains from random initialisation
    drop_rate: float = 0.0  # dropout before the classifier


@dataclass
class TrainSection:
    image_size: int = 32  # px, side of the square network input
    epochs: int = 15  # passes over the fold's training part
    batch_size: int = 64  # images per optimiser step
    lr: float = 3e-3  # peak learning rate of AdamW
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay, in epochs
    label_smoothing: float = 0.1  # cross-entropy target smoothing
    seed: int = 0  # torch / numpy seed; fold k uses seed + k
    num_workers: int = 0  # DataLoader worker processes; 0 decodes in the training process
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16)
    channels_last: bool = True  # NHWC memory layout on CUDA (faster convolutions); CPU ignores it
    schedule: str = "cosine"  # "cosine" (linear warm-up, cosine decay) or "onecycle"
    accumulate: int = 1  # batches whose gradients add up before one optimiser step
    clip_grad_norm: float = 0.0  # max gradient L2 norm, after unscaling; 0 = no clipping
    ema_decay: float = 0.0  # EMA of the weights per step (e.g. 0.999), scored beside them; 0 = off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup of image pairs; 0 = off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) cutmix boxes; 0 = off (both on: one per batch)
    mix_until_epoch: int = 0  # mixup/cutmix stop from this epoch on (clean last epochs); 0 = never
    balance: str = "none"  # "none", "sampler" (class-balanced draws) or "loss" (class weights)
    pseudo: str = ""  # stage 2: also train on pseudo/<name>/labels.csv (`kit pseudo`); "" = off
    pseudo_weight: float = 0.5  # share of a training image's target from its OOF soft label
    freeze_epochs: int = 0  # epochs that train only the classifier head before unfreezing all
    patience: int = 0  # early stopping: epochs without a better metric; 0 = train every epoch
    checkpoint_every: int = 0  # optimiser steps between last.pt saves; 0 = at each epoch's end
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
    batch_size: int = 256  # images per forward pass (each expands to len(tta) views)
    auto: bool = False  # keep only the views of tta that raise the OOF score (greedy)
    merge: str = "mean"  # how views merge: "mean" of probabilities or "gmean" (geometric mean)
    fold_merge: str = "prob"  # how folds merge on test: "prob" (mean) or "logit" (log space)
    forbid_views: list[str] = field(default_factory=list)  # views the task forbids, e.g. ["hflip"]


@dataclass
class EnsembleSection:
    # how `kit ensemble` blends runs: "mean", "rank" (rank average, for ranking metrics such as
    # AUC), "gmean" (geometric mean) or "weights" (non-negative weights hill-climbed on OOF)
    method: str = "mean"
    decide: bool = False  # tune the decision layer (offsets, cut-points, thresholds) on OOF
    hill_climb_steps: int = 25  # method "weights": members added (with repeats) at most


@dataclass
class TaskSection:
    type: str = "multiclass"  # multiclass, binary, multilabel or ordinal (see kit/task.py)


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
    format: str = "class_index"
    positive_class: str = ""  # format "probability": the class whose probability is submitted


@dataclass
class KernelSection:
    owner: str = ""  # Kaggle username owning the kernel and its dataset; "" = the credentials' one
    slug: str = ""  # the kernel's Kaggle slug; "" = <competition>-<run>
    gpu: bool = False  # enable_gpu in kernel-metadata.json (internet is always off)
    # requirements missing from Kaggle's image, packed as wheels (pip download: needs the index)
    extra_wheels: list[str] = field(default_factory=list)


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(options)}"


def _check_value(where: str, value: Any, annotation: Any) -> Any:
    """Return value converted to the annotated type, or raise ConfigError naming the field."""
    origin = get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_type,) = get_args(annotation)
        if isinstance(value, list):
            item_origin = get_origin(item_type) or item_type
            for item in value:
                if not isinstance(item, item_origin):
                    break
            else:
                return value
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(
        f"{where} must be {type_name}, got {type(value).__name__} {value!r}; fix it in kit.toml"
    )


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    hints = get_type_hints(type(section))
    names = [f.name for f in dataclasses.fields(section)]
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key '{where}.{key}' in kit.toml: {_suggest(key, names)}")
        setattr(section, key, _check_value(f"{where}.{key}", value, hints[key]))


def config_from_dict(raw: dict[str, Any], source: str = "kit.toml") -> Config:
    config = Config()
    sections = [f.name for f in dataclasses.fields(config)]
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown section [{name}] in {source}: {_suggest(name, sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] in {source} must be a table of keys")
        _apply(getattr(config, name), values, name)
    return config


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
    for text in overrides:
        (section, key), value = parse_override(text)
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw, source=str(path))


def dump_toml(data: dict[str, Any]) -> str:
    """Write a two-level dict of plain values as TOML (enough for Config.to_dict())."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
