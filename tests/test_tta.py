import pytest
import torch

from kit.errors import ConfigError
from kit.infer.tta import make_views, parse_view


def test_shift_moves_content_and_repeats_the_edge():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    right = parse_view("shift:1,0")(x)
    assert right[0, 0, 1, 2] == 1.0 and right[0, 0, 1, 1] == 0.0
    up = parse_view("shift:0,-1")(x)
    assert up[0, 0, 0, 1] == 1.0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert parse_view("shift:2,0")(ramp)[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_flips_rotations_and_scale_keep_the_shape():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(parse_view("hflip")(x), x.flip(3))
    assert torch.equal(parse_view("rot90")(parse_view("rot270")(x)), x)
    assert torch.equal(parse_view("identity")(x), x)
    for view in ("scale:1.2", "scale:0.8", "transpose", "vflip"):
        assert parse_view(view)(x).shape == x.shape


def test_views_are_stacked_view_major():
    x = torch.rand(3, 1, 4, 4)
    views = [parse_view("identity"), parse_view("hflip")]
    stacked = make_views(x, views)
    assert stacked.shape == (6, 1, 4, 4)
    assert torch.equal(stacked[3:], x.flip(3))


@pytest.mark.parametrize("bad", ["mirror", "shift:1", "scale:-1", "hflip:2", "shift:a,b"])
def test_unknown_views_are_config_errors(bad):
    with pytest.raises(ConfigError, match="predict.tta view"):
        parse_view(bad)


def test_crops_and_fivecrop_expand_into_five_views():
    from kit.infer.tta import expand_views

    assert expand_views(["identity", "fivecrop:0.5", "crop:c,0.5"]) == [
        "identity", "crop:c,0.5", "crop:tl,0.5", "crop:tr,0.5", "crop:bl,0.5", "crop:br,0.5",
    ]  # fmt: skip
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2] = 1.0  # the top-left quarter is bright
    top_left = parse_view("crop:tl,0.5")(x)
    assert top_left.shape == x.shape and torch.allclose(top_left, torch.ones_like(x))
    assert torch.equal(parse_view("crop:br,0.5")(x), torch.zeros_like(x))
    with pytest.raises(ConfigError, match="expand_views first"):
        parse_view("fivecrop:0.5")
    for bad in ("crop:zz,0.5", "crop:c,1.5", "fivecrop:0"):
        with pytest.raises(ConfigError, match="predict.tta view"):
            parse_view(bad)


def test_forbidden_views_name_the_setting():
    from kit.infer.tta import check_views

    check_views(["identity", "shift:1,0"], ["hflip"])
    with pytest.raises(ConfigError, match=r"'shift:1,0' is forbidden by predict.forbid_views"):
        check_views(["identity", "shift:1,0"], ["shift"])  # a kind forbids all its views


def test_the_eight_symmetries_are_the_dihedral_group():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    names = ["identity", "hflip", "vflip", "transpose", "antitranspose"]
    names += ["rot90", "rot180", "rot270"]
    outputs = {tuple(parse_view(n)(x).flatten().tolist()) for n in names}
    assert len(outputs) == 8  # all distinct
    assert torch.equal(parse_view("antitranspose")(x), torch.rot90(x.transpose(2, 3), 2, (2, 3)))
