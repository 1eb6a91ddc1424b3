"""timm models by name; pretrained weights only ever from a local file."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from timm.models import load_state_dict

from kit.config import ModelSection
from kit.errors import ConfigError

HUB_PREFIXES = ("hf-hub:", "hf_hub:", "timm/")


def check_model_name(name: str) -> None:
    """A timm architecture name, never a hub reference; a ConfigError with the closest names."""
    if name.startswith(HUB_PREFIXES):
        raise ConfigError(
            f"model.name {name!r} would download from a hub: use a timm architecture "
            "name and a local model.pretrained_file"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise ConfigError(f"model.name {name!r} is not a timm model: {hint}")


def create_model(settings: ModelSection, num_classes: int, root: Path | None = None):
    """A timm model with a fresh num_classes head; never downloads from a hub."""
    check_model_name(settings.name)
    kwargs = {"num_classes": num_classes, "drop_rate": settings.drop_rate}
    if not settings.pretrained_file:
        return timm.create_model(settings.name, pretrained=False, **kwargs)
    path = Path(settings.pretrained_file)
    if root is not None and not path.is_absolute():
        path = root / path
    if not path.exists():
        raise ConfigError(
            f'model.pretrained_file {path} not found: give a local weights file or set it to ""'
        )
    try:
        return timm.create_model(
            settings.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except Exception as error:  # a foreign or hostile file (timm reads it weights-only)
        detail = weights_mismatch(timm.create_model(settings.name, **kwargs), path) or str(error)
        detail = " ".join(detail.split()) or type(error).__name__
        raise ConfigError(
            f"model.pretrained_file {path} does not fit {settings.name}: {detail[:400]}; "
            "give weights of this architecture or set model.name to theirs"
        ) from None


def weights_mismatch(model, path: Path) -> str:
    """Which keys of a weights file differ from the model's (classifier aside, it is replaced)."""
    try:
        weights = load_state_dict(str(path))
    except Exception as error:  # not a weights file at all
        return f"cannot be read ({type(error).__name__})"
    head = (model.pretrained_cfg or {}).get("classifier", "")
    own = {k: v for k, v in model.state_dict().items() if not (head and k.startswith(head))}
    weights = {k: v for k, v in weights.items() if not (head and k.startswith(head))}
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{len(found)} {label} (e.g. {', '.join(found[:3])})"
        for label, found in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if found
    ]
    return "; ".join(parts)


def input_stats(model) -> tuple[tuple, tuple]:
    """The mean and std the model's weights expect (ImageNet's unless its config says)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(
        cfg.get("std", (0.229, 0.224, 0.225))
    )
