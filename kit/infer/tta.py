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

from kit.infer.views import SIMPLE_VIEWS, check_views, expand_views, parse_spec

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
assert tuple(SIMPLE) == SIMPLE_VIEWS  # one grammar: kit/infer/views.py
__all__ = ["check_views", "expand_views", "make_views", "parse_view"]


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


def _crop(x: torch.Tensor, position: str, side: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    top = {"c": (h - ch) // 2, "t": 0, "b": h - ch}[position[0]]
    left = {"c": (w - cw) // 2, "l": 0, "r": w - cw}[position[-1]]
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def parse_view(view: str):
    """The function for one view name, or a ConfigError naming the view and the choices."""
    name, args = parse_spec(view)
    if name in SIMPLE:
        return SIMPLE[name]
    if name == "shift":
        return lambda x: _shift(x, *args)
    if name == "scale":
        return lambda x: _scale(x, *args)
    return lambda x: _crop(x, *args)


def make_views(x: torch.Tensor, views: list) -> torch.Tensor:
    """(B,C,H,W) -> (V*B,C,H,W), view-major, so one forward pass scores every view."""
    if len(views) == 1:
        return views[0](x)  # no copy: a CPU runs views one pass at a time
    return torch.cat([view(x) for view in views])
