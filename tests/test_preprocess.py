"""edge_ad.data.preprocess: geometry, normalisation, masks and (de)serialisation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_ad.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


def _random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _marked_image(size: int = 512) -> np.ndarray:
    """Grey image, red square in the exact centre, white 8-px frame along the border."""
    img = np.full((size, size, 3), 100, np.uint8)
    c = size // 2
    img[c - 32 : c + 32, c - 32 : c + 32] = (255, 0, 0)
    img[:8] = img[-8:] = 255
    img[:, :8] = img[:, -8:] = 255
    return img


# ----------------------------------------------------------------------------- shapes
def test_defaults_match_paper() -> None:
    p = Preprocessing()
    assert (p.image_size, p.resize) == (224, 256)
    assert p.mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert p.std == IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("hw", [(300, 400), (400, 300), (256, 256), (100, 120), (1024, 1024)])
@pytest.mark.parametrize("resize", [256, None])
def test_output_shapes_and_dtypes(hw: tuple[int, int], resize: int | None) -> None:
    p = Preprocessing(image_size=224, resize=resize)
    img = _random_image(*hw)
    g = p.geometry(img)
    assert g.shape == (224, 224, 3) and g.dtype == np.uint8
    x = p(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x.flags["C_CONTIGUOUS"]
    m = p.mask(np.zeros(hw, bool))
    assert m.shape == (224, 224) and m.dtype == bool


def test_batch_matches_single_calls() -> None:
    p = Preprocessing(image_size=32, resize=40)
    imgs = [_random_image(50, 60, 1), _random_image(45, 45, 2), _random_image(80, 30, 3)]
    b = p.batch(imgs)
    assert b.shape == (3, 3, 32, 32) and b.dtype == np.float32
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(b[i], p(img))
    assert p.batch([]).shape == (0, 3, 32, 32)


# ----------------------------------------------------------------------------- geometry
def test_centre_crop_without_resampling_is_exact_slice() -> None:
    img = _random_image(256, 256)
    out = Preprocessing(image_size=224, resize=256).geometry(img)
    np.testing.assert_array_equal(out, img[16:240, 16:240])


@pytest.mark.parametrize(
    ("hw", "resized_hw", "offset"),
    [((300, 400), (256, 341), (16, 58)), ((400, 300), (341, 256), (58, 16))],
)
def test_shorter_side_resize_then_centre_crop(
    hw: tuple[int, int], resized_hw: tuple[int, int], offset: tuple[int, int]
) -> None:
    # Longer side = int(256 * long / short) as in torchvision; crop offset = (dim - 224) // 2.
    img = _random_image(*hw)
    out = Preprocessing(image_size=224, resize=256).geometry(img)
    resized = cv2.resize(img, resized_hw[::-1], interpolation=cv2.INTER_AREA)
    top, left = offset
    np.testing.assert_array_equal(out, resized[top : top + 224, left : left + 224])


def test_centre_crop_picks_the_centre_and_drops_the_border() -> None:
    out = Preprocessing(image_size=224, resize=256).geometry(_marked_image(512))
    red = (out[..., 0] > 200) & (out[..., 1] < 50)
    ys, xs = np.nonzero(red)
    assert red.sum() > 0
    assert abs(ys.mean() - 111.5) < 0.5 and abs(xs.mean() - 111.5) < 0.5
    # 512 -> 256 shrinks the 8-px frame to 4 px; the crop removes 16 px on every side.
    assert (out == 100).all(axis=2)[[0, -1], :].all()
    assert (out == 100).all(axis=2)[:, [0, -1]].all()


def test_texture_mode_keeps_the_border() -> None:
    img = _marked_image(512)
    out = Preprocessing(image_size=256, resize=None).geometry(img)
    np.testing.assert_array_equal(out, cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA))
    assert (out[:4] == 255).all() and (out[-4:] == 255).all()
    assert (out[:, :4] == 255).all() and (out[:, -4:] == 255).all()
    cropped = Preprocessing(image_size=224, resize=256).geometry(img)
    assert not (cropped[0] == 255).all()


def test_texture_mode_non_square_mixed_axes() -> None:
    # Height grows (100 -> 224), width shrinks (400 -> 224): each axis resized with its own rule.
    img = np.full((100, 400, 3), 77, np.uint8)
    img[:, :20] = 200  # left border stripe survives
    out = Preprocessing(image_size=224, resize=None).geometry(img)
    assert out.shape == (224, 224, 3)
    assert (out[:, :10] == 200).all()
    assert (out[:, 20:] == 77).all()


def test_enlarging_uses_bilinear() -> None:
    img = _random_image(100, 100)
    out = Preprocessing(image_size=224, resize=None).geometry(img)
    np.testing.assert_array_equal(out, cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR))


def test_geometry_rejects_bad_images() -> None:
    p = Preprocessing()
    with pytest.raises(ValueError):
        p.geometry(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        p.geometry(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        p(np.zeros((10, 10, 4), np.uint8))


# ----------------------------------------------------------------------------- normalisation
def test_normalize_matches_formula() -> None:
    img = _random_image(20, 30, 5)
    p = Preprocessing()
    x = p.normalize(img)
    assert x.shape == (3, 20, 30) and x.dtype == np.float32
    mean = np.array(IMAGENET_MEAN)[:, None, None]
    std = np.array(IMAGENET_STD)[:, None, None]
    ref = (img.transpose(2, 0, 1).astype(np.float64) / 255.0 - mean) / std
    np.testing.assert_allclose(x, ref, atol=1e-5, rtol=0)
    # channel order: channel 0 is R with R's statistics
    assert x[0, 0, 0] == pytest.approx((img[0, 0, 0] / 255 - 0.485) / 0.229, abs=1e-5)


@pytest.mark.parametrize("mean_std", [(IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_normalize_table_is_bit_identical_to_the_per_pixel_formula(mean_std: tuple) -> None:
    """The lookup table computes the float32 formula operation by operation: every value of every channel equal."""
    mean, std = mean_std
    p = Preprocessing(mean=mean, std=std)
    img = np.zeros((16, 16, 3), np.uint8)
    img.reshape(-1, 3)[:] = np.arange(256, dtype=np.uint8)[:, None]  # all 256 values in every channel
    img[..., 1] = img[..., 1][::-1]  # channels differ
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    per_pixel = np.ascontiguousarray(((img.astype(np.float32) / np.float32(255.0) - m) / s).transpose(2, 0, 1))
    np.testing.assert_array_equal(p.normalize(img), per_pixel)
    out = np.full((3, 16, 16), np.nan, np.float32)
    assert p.normalize(img, out=out) is out
    np.testing.assert_array_equal(out, per_pixel)
    with pytest.raises(ValueError, match="out must be"):
        p.normalize(img, out=np.empty((3, 16, 15), np.float32))


def test_call_is_geometry_then_normalize() -> None:
    img = _random_image(300, 280, 6)
    p = Preprocessing()
    np.testing.assert_array_equal(p(img), p.normalize(p.geometry(img)))


def test_denormalize_inverts_normalize() -> None:
    img = _random_image(16, 16, 7)
    p = Preprocessing(image_size=16, resize=None, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    back = p.denormalize(p.normalize(img))
    assert back.dtype == np.uint8 and back.shape == (16, 16, 3)
    np.testing.assert_array_equal(back, img)
    with pytest.raises(ValueError):
        p.denormalize(np.zeros((16, 16, 3), np.float32))


# ----------------------------------------------------------------------------- masks
def test_mask_binarised_at_half() -> None:
    # Width 2 -> 3 bilinear (half-pixel centres): column values 1, 0.5, 0. 0.5 counts as anomalous.
    m = np.zeros((3, 2), bool)
    m[:, 0] = True
    p = Preprocessing(image_size=3, resize=None)
    soft = cv2.resize(m.astype(np.float32), (3, 3), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(soft[0], [1.0, 0.5, 0.0])
    out = p.mask(m)
    assert out.dtype == bool
    assert out.tolist() == [[True, True, False]] * 3


def test_mask_threshold_differs_from_exactly_one_rule() -> None:
    # Width 2 -> 4: values 1, 0.75, 0.25, 0 -> >= 0.5 keeps two columns (the authors' rule would keep one).
    m = np.zeros((4, 2), bool)
    m[:, 0] = True
    out = Preprocessing(image_size=4, resize=None).mask(m)
    assert out[0].tolist() == [True, True, False, False]


def test_mask_follows_image_geometry() -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), bool)
    img[100:180, 250:330] = 255
    mask[100:180, 250:330] = True
    p = Preprocessing(image_size=224, resize=256)
    g = p.geometry(img)[..., 0] > 127
    m = p.mask(mask)
    assert m.sum() > 0
    assert (g != m).sum() <= 0.05 * m.sum()


def test_mask_accepts_uint8_and_rejects_3d() -> None:
    p = Preprocessing(image_size=8, resize=None)
    assert p.mask(np.ones((8, 8), np.uint8)).all()
    with pytest.raises(ValueError):
        p.mask(np.ones((8, 8, 3), bool))


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "p",
    [
        Preprocessing(),
        Preprocessing(image_size=288, resize=329),
        Preprocessing(image_size=256, resize=None),
        Preprocessing(image_size=64, resize=64, mean=(0.5, 0.5, 0.5), std=(1, 1, 1)),
    ],
)
def test_dict_round_trip(p: Preprocessing) -> None:
    d = json.loads(json.dumps(p.to_dict()))
    q = Preprocessing.from_dict(d)
    assert q == p
    assert q.to_dict() == p.to_dict()
    assert set(d) == {"image_size", "resize", "mean", "std"}


def test_lists_become_tuples_and_instances_are_hashable() -> None:
    p = Preprocessing(mean=[0.1, 0.2, 0.3], std=[1, 2, 3])  # type: ignore[arg-type]
    assert p.mean == (0.1, 0.2, 0.3) and p.std == (1.0, 2.0, 3.0)
    hash(p)
    with pytest.raises(AttributeError):
        p.image_size = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    "patch",
    [
        {"extra": 1},
        {"image_size": "224"},
        {"image_size": 224.0},
        {"image_size": True},
        {"image_size": 0},
        {"image_size": -5},
        {"resize": 200},
        {"resize": "256"},
        {"resize": 0},
        {"mean": [0.5, 0.5]},
        {"mean": "abc"},
        {"mean": [0.5, 0.5, None]},
        {"std": [0.2, 0.0, 0.2]},
        {"std": [0.2, -1.0, 0.2]},
        {"std": [0.2, float("nan"), 0.2]},
    ],
)
def test_from_dict_rejects_bad_values(patch: dict) -> None:
    d = Preprocessing().to_dict()
    d.update(patch)
    with pytest.raises(ValueError):
        Preprocessing.from_dict(d)


def test_from_dict_rejects_missing_keys_and_non_mapping() -> None:
    d = Preprocessing().to_dict()
    del d["std"]
    with pytest.raises(ValueError, match="std"):
        Preprocessing.from_dict(d)
    with pytest.raises(ValueError):
        Preprocessing.from_dict([("image_size", 224)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bogus"):
        Preprocessing.from_dict({**Preprocessing().to_dict(), "bogus": 1})


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(image_size=224, resize=223)
    Preprocessing(image_size=224, resize=224)
    with pytest.raises(ValueError):
        Preprocessing(image_size=0, resize=None)
