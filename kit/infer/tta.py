"""Test-time views, made on the device from one decoded batch: `name` or `name:args`.

identity, hflip, vflip, transpose, antitranspose, rot90, rot180, rot270 (with identity: the
dihedral group D4), shift:DX,DY (pixels at network input),
scale:S (zoom about the centre, S > 0), crop:POS,S (the crop of side S x the image at POS = c, tl,
tr, bl or br, resized back) and fivecrop:S, which stands for the five crops c, tl, tr, bl, br.
A task can forbid views (predict.forbid_views): naming one is a ConfigError, never a silent skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kit.errors import ConfigError

SIMPLE = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(3),
    "vflip": lambda x: x.flip(2),
    "transpose": lambda x: x.transpose(2, 3),
    "rot90": lambda x: torch.rot90(x, 1, (2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, (2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, (2, 3)),
    "antitranspose": lambda x: x.transpose(2, 3).flip(2).flip(3),  # the other diagonal
}


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move content right by dx and down by dy, repeating the edge into the gap."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    resized = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    if factor >= 1:
        top, left = (nh - h) // 2, (nw - w) // 2
        return resized[..., top : top + h, left : left + w]
    top, left = (h - nh) // 2, (w - nw) // 2
    return F.pad(resized, (left, w - nw - left, top, h - nh - top), mode="replicate")


CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")


def _crop(x: torch.Tensor, position: str, side: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    top = {"c": (h - ch) // 2, "t": 0, "b": h - ch}[position[0]]
    left = {"c": (w - cw) // 2, "l": 0, "r": w - cw}[position[-1]]
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


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


def parse_view(view: str):
    """The function for one view name, or a ConfigError naming the view and the choices."""
    name, _, args = view.partition(":")
    try:
        if name in SIMPLE and not args:
            return SIMPLE[name]
        if name == "shift":
            dx, dy = (int(v) for v in args.split(","))
            return lambda x: _shift(x, dx, dy)
        if name == "scale" and float(args) > 0:
            factor = float(args)
            return lambda x: _scale(x, factor)
        position, _, side = args.partition(",")
        if name == "crop" and position in CROP_POSITIONS and 0 < float(side) <= 1:
            return lambda x: _crop(x, position, float(side))
        if name == "fivecrop" and 0 < float(args) <= 1:
            raise ConfigError(f"predict.tta view {view!r} stands for 5 views: expand_views first")
    except ValueError:
        pass
    raise ConfigError(
        f"predict.tta view {view!r} is unknown: use {', '.join(SIMPLE)}, shift:DX,DY, scale:S, "
        "crop:POS,S (POS = c, tl, tr, bl, br; 0 < S <= 1) or fivecrop:S"
    )


def make_views(x: torch.Tensor, views: list) -> torch.Tensor:
    """(B,C,H,W) -> (V*B,C,H,W), view-major, so one forward pass scores every view."""
    if len(views) == 1:
        return views[0](x)  # no copy: a CPU runs views one pass at a time
    return torch.cat([view(x) for view in views])
