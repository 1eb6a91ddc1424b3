"""albumentations pipelines declared in kit.toml as lists of {name = "Class", arg = value}.

Order matters for speed: a per-pixel op costs in proportion to the pixels it sees, so kit resizes
to train.image_size first. A pipeline that sizes images itself (RandomResizedCrop, CenterCrop...)
runs as written and ends with a resize to image_size; a heavy op before its first downscale gets a
warning (SlowPipelineWarning).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from typing import Any

import albumentations as A

from kit.data.fused import ResizeAffine, fusable
from kit.errors import ConfigError

# ops that set the image size: a pipeline holding one of them is not resized up front
SIZING = {
    "Resize",
    "RandomResizedCrop",
    "RandomSizedCrop",
    "CenterCrop",
    "RandomCrop",
    "Crop",
    "SmallestMaxSize",
    "LongestMaxSize",
    "RandomCropFromBorders",
    "AtLeastOneBBoxRandomCrop",
}
# ops whose cost grows with the pixels and that are worth running after a downscale
HEAVY = {
    "CLAHE",
    "Affine",
    "ShiftScaleRotate",
    "Rotate",
    "SafeRotate",
    "ElasticTransform",
    "GridDistortion",
    "OpticalDistortion",
    "Perspective",
    "GaussianBlur",
    "MotionBlur",
    "MedianBlur",
    "GlassBlur",
    "GaussNoise",
    "ColorJitter",
    "HueSaturationValue",
    "Sharpen",
    "Emboss",
    "Equalize",
    "RandomBrightnessContrast",
    "RandomGamma",
    "ISONoise",
    "Superpixels",
    "RandomFog",
    "RandomRain",
    "RandomShadow",
    "Downscale",
    "ImageCompression",
    "Defocus",
}


class SlowPipelineWarning(UserWarning):
    """A configured pipeline runs per-pixel ops at full resolution before shrinking the image."""


def slow_order(specs: list[dict[str, Any]], where: str = "augment") -> str | None:
    """A warning when heavy ops come before the pipeline's first downscale, else None."""
    names = [spec.get("name", "") for spec in specs]
    first_sizing = next((i for i, name in enumerate(names) if name in SIZING), None)
    if first_sizing is None:
        return None
    heavy = [name for name in names[:first_sizing] if name in HEAVY]
    if not heavy:
        return None
    return (
        f"{where}: {', '.join(heavy)} run(s) before {names[first_sizing]} shrinks the image; "
        f"move {names[first_sizing]} first in kit.toml (the same ops on fewer pixels are faster)"
    )


def known_arguments(cls: type) -> set[str]:
    """The keyword arguments a transform's constructor declares (albumentations ignores others)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {p.name for p in parameters if p.name != "self" and p.kind not in variadic}


def _suggest_argument(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"


# transforms that take code (callables) rather than values: a config cannot give them safely;
# and the abstract bases every transform derives from, which transform nothing themselves
CODE_TRANSFORMS = {"Lambda"}
BASES = {"BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D"}


@functools.cache
def transform_classes() -> dict[str, type]:
    """{name: class} of the albumentations transforms kit.toml may name: public classes that
    subclass BasicTransform, not containers (Compose...), CODE_TRANSFORMS or BASES. A name is looked
    up here, never with getattr, so `__class__` or a module attribute cannot be reached."""
    found = {}
    for name in dir(A):
        value = getattr(A, name)
        if (
            name[:1].isupper()
            and isinstance(value, type)
            and issubclass(value, A.BasicTransform)
            and name not in CODE_TRANSFORMS | BASES
        ):
            found[name] = value
    return found


def build_steps(specs: list[dict[str, Any]], where: str) -> list:
    """The albumentations objects of specs, each error naming its field."""
    steps = []
    for index, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("name", None)
        field = f"{where}[{index}]"
        if not name:
            raise ConfigError(f'{field} in kit.toml needs name = "<albumentations class>"')
        allowed = transform_classes()
        cls = allowed.get(name) if isinstance(name, str) else None
        if cls is None:
            close = difflib.get_close_matches(str(name), sorted(allowed), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see albumentations' docs"
            raise ConfigError(f"{field}: albumentations has no transform {name!r}; {hint}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        unknown = sorted(set(args) - known_arguments(cls))
        if unknown:  # albumentations only warns and drops them: the user meant something else
            raise ConfigError(
                f"{field} ({name}): unknown argument '{unknown[0]}'; "
                + _suggest_argument(unknown[0], known_arguments(cls))
            )
        try:
            steps.append(cls(**args))
        except Exception as error:  # pydantic, numpy, overflow: all say the values are wrong
            message = " ".join(str(error).split())[:200]
            raise ConfigError(f"{field} ({name}): bad arguments: {message}") from None
    return steps


def create_transform(specs: list[dict[str, Any]], image_size: int, where: str = "augment"):
    """uint8 HxWxC -> image_size x image_size: resize first, then the configured transforms."""
    steps = build_steps(specs, where)
    if any(spec.get("name") in SIZING for spec in specs):
        message = slow_order(specs, where)
        if message:
            warnings.warn(message, SlowPipelineWarning, stacklevel=2)
        return A.Compose([*steps, A.Resize(image_size, image_size)])
    fused = _fused_resize(specs, image_size)
    if fused is not None:  # the resize and the Affine after it as one warp
        return A.Compose([fused, *steps[1:]])
    return A.Compose([A.Resize(image_size, image_size), *steps])


def _fused_resize(specs: list[dict[str, Any]], image_size: int):
    """kit.data.fused.ResizeAffine for a pipeline starting with an always-on Affine, else None."""

    if not specs or not fusable(specs[0]):
        return None
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in specs[0].items() if k != "name"}
    return ResizeAffine(image_size, **args)


def create_preprocess(specs: list[dict[str, Any]], where: str = "data.preprocess"):
    """The fixed ops applied once per image before the cache, or None when there are none."""
    if not specs:
        return None
    message = slow_order(specs, where)
    if message:
        warnings.warn(message, SlowPipelineWarning, stacklevel=2)
    return A.Compose(build_steps(specs, where))
