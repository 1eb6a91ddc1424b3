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
    image_ext: str = ".png"  # appended to ids to find files; "" when ids carry it


@dataclass
class FoldsSection:
    n_splits: int = 5  # k of stratified k-fold
    seed: int = 42  # shuffles before splitting; changing it changes folds.csv


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


@dataclass
class TaskSection:
    type: str = "multiclass"  # multiclass, binary, multilabel or ordinal (see kit/task.py)


@dataclass
class MetricSection:
    name: str = "accuracy"  # the competition's metric; selects the best epoch


@dataclass
class SubmissionSection:
    id_column: str = "id"  # sample_submission's id column
    target_column: str = "label"  # sample_submission's prediction column
    format: str = "class_index"  # "class_index" or "class_name": what the target column holds


@dataclass
class Config:
    competition: CompetitionSection = field(default_factory=CompetitionSection)
    data: DataSection = field(default_factory=DataSection)
    folds: FoldsSection = field(default_factory=FoldsSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    predict: PredictSection = field(default_factory=PredictSection)
    task: TaskSection = field(default_factory=TaskSection)
    metric: MetricSection = field(default_factory=MetricSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)

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
