"""timm models by name; pretrained weights only ever from a local file."""

from __future__ import annotations

import difflib
from pathlib import Path

from kit.config import ModelSection
from kit.errors import ConfigError


def create_model(settings: ModelSection, num_classes: int, root: Path | None = None):
    """A timm model with a fresh num_classes head; never downloads from a hub."""
    import timm

    if not timm.is_model(settings.name):
        close = difflib.get_close_matches(settings.name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise ConfigError(f"model.name {settings.name!r} is not a timm model: {hint}")
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
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3])[:300]
        raise ConfigError(
            f"model.pretrained_file {path} does not fit {settings.name}: {detail}"
        ) from None


def input_stats(model) -> tuple[tuple, tuple]:
    """The mean and std the model's weights expect (ImageNet's unless its config says)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(
        cfg.get("std", (0.229, 0.224, 0.225))
    )
