"""The choice lists of kit.toml: each is defined here once, and every module that acts on a choice
asks these. Kept free of heavy imports: `kit --help` builds its option choices from them."""

from __future__ import annotations

from typing import Any, Literal, get_args

PlatformName = Literal["local", "kaggle", "host"]
Layout = Literal["csv", "folder_per_class", "path_regex"]
Schedule = Literal["cosine", "onecycle"]
Balance = Literal["none", "sampler", "loss"]
ViewMerge = Literal["mean", "gmean"]
FoldMerge = Literal["prob", "logit"]
BlendMethod = Literal["mean", "rank", "gmean", "weights"]
TaskType = Literal["multiclass", "binary", "multilabel", "ordinal"]
SubmissionFormat = Literal["class_index", "class_name", "probability", "probabilities"]
CacheFormat = Literal["raw", "png", "jpeg"]  # how data.cache stores an image


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a choice type, e.g. choices(Schedule) -> ('cosine', 'onecycle')."""
    return get_args(kind)
