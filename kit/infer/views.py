"""The TTA view grammar, without torch: names, arguments and the rules a config must meet.

`kit/infer/tta.py` turns these specs into tensor functions; kit.toml is checked against this
module at load, so a typo in predict.tta fails before any training starts.
"""

from __future__ import annotations

from kit.errors import ConfigError

# identity + the seven others: the dihedral group D4
SIMPLE_VIEWS = (
    "identity",
    "hflip",
    "vflip",
    "transpose",
    "rot90",
    "rot180",
    "rot270",
    "antitranspose",
)
CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")
GRAMMAR = (
    f"{', '.join(SIMPLE_VIEWS)}, shift:DX,DY, scale:S, crop:POS,S "
    "(POS = c, tl, tr, bl, br; 0 < S <= 1) or fivecrop:S"
)


def expand_views(views: list[str]) -> list[str]:
    """Names with the fivecrop:S shorthand spelled out as its five crop views, duplicates dropped."""
    expanded: list[str] = []
    for view in views:
        name, _, args = view.strip().partition(":")
        parts = (
            [f"crop:{p},{args}" for p in CROP_POSITIONS] if name == "fivecrop" else [view.strip()]
        )
        expanded += [p for p in parts if p not in expanded]
    return expanded


def check_views(views: list[str], forbidden: list[str], where: str = "predict.tta") -> None:
    """Refuse a view the task forbids (by full name or by kind, e.g. 'shift' or 'hflip')."""
    for view in views:
        if view in forbidden or view.partition(":")[0] in forbidden:
            raise ConfigError(
                f"{where} view {view!r} is forbidden by predict.forbid_views "
                f"({', '.join(forbidden)}): remove it from {where}"
            )


def parse_spec(view: str) -> tuple[str, tuple]:
    """'shift:1,0' -> ('shift', (1, 0)); a ConfigError naming the view and the grammar."""
    name, _, args = view.partition(":")
    try:
        if name in SIMPLE_VIEWS and not args:
            return name, ()
        if name == "shift":
            dx, dy = (int(v) for v in args.split(","))
            return name, (dx, dy)
        if name == "scale" and float(args) > 0:
            return name, (float(args),)
        position, _, side = args.partition(",")
        if name == "crop" and position in CROP_POSITIONS and 0 < float(side) <= 1:
            return name, (position, float(side))
        if name == "fivecrop" and 0 < float(args) <= 1:
            raise ConfigError(f"predict.tta view {view!r} stands for 5 views: expand_views first")
    except ValueError:
        pass
    raise ConfigError(f"predict.tta view {view!r} is unknown: use {GRAMMAR}")


def check_view_names(views: list[str], forbidden: list[str], where: str = "predict.tta") -> None:
    """Every view parses and none is forbidden; at least one view."""
    if not views:
        raise ConfigError(f"{where} is empty: name at least one view, e.g. identity")
    expanded = expand_views(views)
    for view in expanded:
        parse_spec(view)
    check_views(expanded, forbidden, where)
