"""Test-time views, made on the device from one decoded batch: `name` or `name:args`.

identity, hflip, vflip, transpose, rot90, rot180, rot270, shift:DX,DY (pixels at network input),
scale:S (zoom about the centre, S > 0).
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
    except ValueError:
        pass
    raise ConfigError(
        f"predict.tta view {view!r} is unknown: use {', '.join(SIMPLE)}, shift:DX,DY or scale:S"
    )


def make_views(x: torch.Tensor, views: list) -> torch.Tensor:
    """(B,C,H,W) -> (V*B,C,H,W), view-major, so one forward pass scores every view."""
    return torch.cat([view(x) for view in views])
