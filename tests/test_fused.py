"""kit.data.fused: the resize to image_size and the default Affine as one warp (issue 11)."""

import albumentations as A
import numpy as np
import pytest

from kit.config import Config
from kit.data.transforms import create_transform
from kit.errors import ConfigError


def photo(size: int, seed: int) -> np.ndarray:
    """Smooth shading, an edge and grain: what a photo's pixels look like to a resampler."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([128 + 90 * np.sin((5 + c) * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    image[size // 4 : size // 2, size // 3 : size // 2] += 60
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def affine_args() -> dict:
    spec = dict(Config().augment.train[0])
    assert spec.pop("name") == "Affine"
    return {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}


def two_passes(size: int, seed: int):
    return A.Compose([A.Resize(size, size), A.Affine(**affine_args())], seed=seed)


def test_the_default_train_pipeline_is_one_warp_and_others_are_not():
    from kit.data.fused import ResizeAffine

    default = create_transform(Config().augment.train, 64, "augment.train")
    assert [type(t) for t in default.transforms] == [ResizeAffine]
    sometimes = [{**Config().augment.train[0], "p": 0.5}]  # a resize must happen without it
    fitted = [{**Config().augment.train[0], "fit_output": True}]
    flip_first = [{"name": "HorizontalFlip"}, *Config().augment.train]
    for specs in (sometimes, fitted, flip_first, []):
        assert type(create_transform(specs, 64).transforms[0]) is A.Resize


def test_kit_toml_cannot_name_the_fused_op():
    with pytest.raises(ConfigError, match="no transform 'ResizeAffine'"):
        create_transform([{"name": "ResizeAffine", "size": 64}], 64)


@pytest.mark.parametrize("source", [96, 40, 8])
def test_at_the_target_size_or_below_it_is_the_two_passes_exactly(source):
    """Same size: the resize is the identity. Smaller (an upscale, as digits' 8 px at 96): kit
    resizes first, as the two passes do, so training on small images is unchanged."""
    image = photo(source, 0)
    fused = create_transform(Config().augment.train, 96)
    for seed in range(5):
        fused.set_random_seed(seed)
        expected = two_passes(96, seed)(image=image)["image"]
        assert np.array_equal(fused(image=image)["image"], expected)


def centroid(image: np.ndarray) -> np.ndarray:
    weight = image.astype(float).sum(-1)
    y, x = np.indices(weight.shape)
    return np.array([(y * weight).sum(), (x * weight).sum()]) / weight.sum()


# a resize matrix without cv2's half-pixel centres would move the square by 0.06 px from 256 px
# and by 0.13 px from 300 px: the tolerances sit between that and what one interpolation differs
@pytest.mark.parametrize("source, tolerance", [(256, 0.03), (300, 0.06)])
def test_from_another_size_it_is_the_same_geometry_and_close(source, tolerance):
    """Same random draws, one bilinear interpolation instead of two: the same geometry (a white
    square lands within hundredths of a pixel of where the two passes put it) and grey levels close
    (the two passes smooth the grain twice: about 1.5 levels of 255 apart on average here)."""
    image = photo(source, 1)
    square = np.zeros((source, source, 3), np.uint8)
    square[source // 3 : source // 2, source // 4 : source // 2] = 255
    fused = create_transform(Config().augment.train, 224)
    for seed in range(5):
        fused.set_random_seed(seed)
        one = fused(image=image)["image"].astype(float)
        fused.set_random_seed(seed)
        moved = centroid(fused(image=square)["image"])
        two = two_passes(224, seed)(image=image)["image"].astype(float)
        assert one.shape == two.shape == (224, 224, 3)
        assert np.abs(one - two).mean() < 2.0
        assert np.percentile(np.abs(one - two), 99) <= 10
        expected = centroid(two_passes(224, seed)(image=square)["image"])
        assert np.abs(moved - expected).max() < tolerance
