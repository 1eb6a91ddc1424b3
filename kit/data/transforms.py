"""albumentations pipelines declared in kit.toml as lists of {name = "Class", arg = value}."""

from __future__ import annotations

import difflib
import os
from typing import Any

from kit.errors import ConfigError


def import_albumentations():
    # albumentations asks PyPI for a newer release on import unless told not to; kit is offline
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def create_transform(specs: list[dict[str, Any]], image_size: int, where: str = "augment"):
    """Resize to image_size, then the configured transforms, on uint8 HxWxC images."""
    A = import_albumentations()
    steps = [A.Resize(image_size, image_size)]
    for index, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("name", None)
        field = f"{where}[{index}]"
        if not name:
            raise ConfigError(f'{field} in kit.toml needs name = "<albumentations class>"')
        cls = getattr(A, name, None)
        if cls is None or not isinstance(cls, type):
            close = difflib.get_close_matches(name, [n for n in dir(A) if n[:1].isupper()], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see albumentations' docs"
            raise ConfigError(f"{field}: albumentations has no transform {name!r}; {hint}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        try:
            steps.append(cls(**args))
        except (TypeError, ValueError) as error:
            message = " ".join(str(error).split())[:200]
            raise ConfigError(f"{field} ({name}): bad arguments: {message}") from None
    return A.Compose(steps)
