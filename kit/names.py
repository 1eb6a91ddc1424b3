"""The one rule for every user-given name, and the guard that kit writes only where it should.

A run, blend, pseudo-label set, kernel or sweep name becomes a folder or file name inside the
competition folder, so it must be a slug: no separators, no `..`, no absolute paths, nothing a
shell or a file system treats specially. Every folder built from a name is also checked to resolve
inside the competition folder (or KIT_HOME), so a planted symlink cannot redirect a write either.
"""

from __future__ import annotations

import re
from pathlib import Path

from kit.errors import UnsafePathError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
NAME = re.compile(NAME_PATTERN)
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"


def check_name(name: str, kind: str = "run") -> str:
    """name, if it is a slug (NAME_PATTERN); else a KitError naming the rule and a fix."""
    text = str(name) if name is not None else ""
    if not NAME.fullmatch(text) or text.endswith((".", ".tmp")) or ".." in text:
        shown = text if len(text) <= 80 else text[:77] + "..."
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-_")[:64].strip(".-_")
        hint = f", e.g. {suggestion!r}" if suggestion and NAME.fullmatch(suggestion) else ""
        raise UnsafePathError(f"{kind} name {shown!r} is not a plain name: use {NAME_RULE}{hint}")
    return text


def ensure_inside(path: Path, *roots: Path) -> Path:
    """path, resolved, if it lies inside one of roots (symlinks followed); else a KitError."""
    resolved = Path(path).resolve()
    for root in roots:
        root = Path(root).resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    where = " or ".join(str(Path(r)) for r in roots)
    raise UnsafePathError(f"{path} resolves to {resolved}, outside {where}: kit writes only there")


def named_dir(parent: Path, name: str, kind: str, root: Path) -> Path:
    """parent/name for a user-given name: a slug, and (symlinks followed) inside root."""
    path = Path(parent) / check_name(name, kind)
    ensure_inside(path, root)
    return path
