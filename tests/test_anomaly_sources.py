"""Pluggable anomaly sources (torch-free): Perlin masks, RealNet's blend, folder and category patterns, the mix."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.synthesis import NsaGenerator, example_rng, params_for
from edge_ad.synthesis.foreground import foreground_mask
from edge_ad.synthesis.patterns import CategoryPatterns, FolderPatterns
from edge_ad.synthesis.perlin import perlin_mask, perlin_noise
from edge_ad.synthesis.sources import (
    SDAS_DELTA,
    TEXTURE_DELTA,
    NsaSource,
    PerlinBlendSource,
    SourceMix,
    anomaly_mix,
    blend,
    object_background,
)
from tests.layering import assert_runs_without


def _noise_image(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 0)


def _object_image(seed: int, size: int = 64) -> np.ndarray:
    """A bright textured disc on a dark, slightly noisy background (level 20)."""
    rng = np.random.default_rng(seed)
    image = np.clip(20 + rng.normal(0, 2, (size, size, 3)), 0, 255).astype(np.uint8)
    disc = np.zeros((size, size), np.uint8)
    cv2.circle(disc, (size // 2, size // 2), size // 3, 1, -1)
    part = rng.integers(150, 230, (size, size, 3), dtype=np.uint8)
    image[disc == 1] = part[disc == 1]
    return image


def test_perlin_masks_are_binary_and_deterministic_from_a_seed() -> None:
    masks = [perlin_mask((64, 80), example_rng(7, i)) for i in range(12)]
    again = [perlin_mask((64, 80), example_rng(7, i)) for i in range(12)]
    for m, n in zip(masks, again, strict=True):
        assert m.dtype == np.uint8 and m.shape == (64, 80)
        assert set(np.unique(m)) <= {0, 1}
        assert np.array_equal(m, n)
    assert all(m.any() for m in masks)
    assert not np.array_equal(masks[0], perlin_mask((64, 80), example_rng(8, 0)))
    # many sizes of blob: covered share differs between draws
    assert np.ptp([m.mean() for m in masks]) > 0.05


def test_perlin_noise_is_smooth_and_bounded() -> None:
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert noise.shape == (64, 64) and np.abs(noise).max() <= 1.0 + 1e-6
    assert np.abs(np.diff(noise, axis=1)).max() < 0.3  # gradient noise, not white noise
    with pytest.raises(ValueError):
        perlin_noise((64, 64), (0, 4), np.random.default_rng(0))


def test_perlin_masks_stay_inside_the_foreground() -> None:
    fg = np.zeros((64, 64), np.uint8)
    cv2.circle(fg, (32, 32), 14, 1, -1)
    for i in range(20):
        mask = perlin_mask((64, 64), example_rng(1, i), foreground=fg)
        assert mask.any()
        assert not np.any(mask[fg == 0])
    nothing = perlin_mask((64, 64), example_rng(1, 0), foreground=np.zeros((64, 64), np.uint8))
    assert not nothing.any()


def test_blend_formula() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    pattern = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    mask = (rng.random((16, 20)) < 0.4).astype(np.uint8)
    for delta in (0.0, 0.3, 0.75, 1.0):
        out = blend(image, pattern, mask, delta)
        m = mask[..., None].astype(np.float64)
        want = (1 - m) * image + (1 - delta) * m * image + delta * m * pattern
        assert out.dtype == np.uint8
        assert np.abs(out.astype(np.float64) - want).max() <= 0.5 + 1e-3  # float32 arithmetic, then rounding
    assert np.array_equal(blend(image, pattern, mask, 1.0)[mask == 1], pattern[mask == 1])
    assert np.array_equal(blend(image, pattern, mask, 0.6)[mask == 0], image[mask == 0])
    with pytest.raises(ValueError):
        blend(image, pattern, mask, 1.5)
    with pytest.raises(ValueError):
        blend(image, pattern[:8], mask, 0.5)


def _write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        assert cv2.imwrite(str(folder / f"p{i}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    (folder / "samples.json").write_text("{}")  # a sample folder's record is not an image
    return folder


def test_folder_source_blends_its_images_with_the_sdas_opacity(tmp_path: Path) -> None:
    pattern = _noise_image(99, size=48)  # another size: resized to the destination
    folder = _write_folder(tmp_path / "sdas", [pattern])
    patterns = FolderPatterns(folder)
    assert len(patterns) == 1
    images = [_noise_image(i) for i in range(3)]
    source = PerlinBlendSource(images, patterns, SDAS_DELTA)
    p = cv2.resize(pattern, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    deltas = []
    for i in range(6):
        ex = source.example(i % 3, example_rng(0, i))
        image = images[i % 3].astype(np.float64)
        on = ex.mask == 1
        assert on.any() and np.array_equal(ex.label, ex.mask.astype(np.float32))
        assert np.array_equal(ex.image[~on], images[i % 3][~on])
        diff, step = (ex.image[on] - image[on]).ravel(), (p[on] - image[on]).ravel()
        delta = float(diff @ step / (step @ step))
        assert np.abs(diff - delta * step).max() <= 1.0  # one opacity over the whole mask, up to rounding
        deltas.append(delta)
    assert all(SDAS_DELTA[0] - 0.01 <= d <= SDAS_DELTA[1] + 0.01 for d in deltas)
    again = source.example(0, example_rng(0, 0))
    assert np.array_equal(again.image, source.example(0, example_rng(0, 0)).image)


def test_folder_source_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        FolderPatterns(tmp_path / "empty")


def test_object_blends_stay_on_the_part() -> None:
    images = [_object_image(i) for i in range(4)]
    background = (20.0, 20.0)
    source = PerlinBlendSource(images, CategoryPatterns(images), TEXTURE_DELTA, background=background)
    for i in range(12):
        ex = source.example(i % 4, example_rng(3, i))
        fg = foreground_mask(images[i % 4], background)
        assert ex.mask.any() and not np.any(ex.mask[fg == 0])
        assert np.array_equal(ex.image[fg == 0], images[i % 4][fg == 0])


def test_object_background_comes_from_the_table_or_the_borders() -> None:
    images = [_object_image(i) for i in range(4)]
    assert object_background(images, "bottle") == (200, 60)
    assert object_background(images, "carpet") is None
    level, threshold = object_background(images, "unknown_part", "object")
    assert abs(level - 20) < 5 and threshold >= 10


def test_category_patterns_are_turned_copies_of_the_good_images() -> None:
    images = [_noise_image(i) for i in range(3)]
    patterns = CategoryPatterns(images)
    variants = [np.rot90(im, k) for im in images for k in range(4)]
    variants += [v[:, ::-1] for v in variants]
    for i in range(10):
        p = patterns.pattern((64, 64), example_rng(5, i))
        assert any(np.array_equal(p, v) for v in variants)


def test_source_mix_keeps_half_normal() -> None:
    images = [_noise_image(i) for i in range(4)]
    source = PerlinBlendSource(images, CategoryPatterns(images), TEXTURE_DELTA)
    mix = SourceMix(images, [(source, 1.0)], normal_share=0.5)
    examples = [mix.example(i % 4, example_rng(11, i)) for i in range(200)]
    normal = [e for e in examples if not e.mask.any()]
    assert 0.4 <= len(normal) / len(examples) <= 0.6
    assert all(np.array_equal(e.image, images[i % 4]) for i, e in enumerate(examples) if not e.mask.any())
    with pytest.raises(ValueError):
        SourceMix(images[:2], [(source, 1.0)])
    with pytest.raises(ValueError):
        SourceMix(images, [(source, -1.0)])


def test_nsa_generator_is_a_source() -> None:
    images = [_noise_image(i) for i in range(4)]
    nsa = NsaSource(NsaGenerator(images, params_for(None, "texture")))
    blends = PerlinBlendSource(images, CategoryPatterns(images), TEXTURE_DELTA)
    mix = SourceMix(images, [(nsa, 1.0), (blends, 1.0)], normal_share=0.0)
    examples = [mix.example(i % 4, example_rng(2, i)) for i in range(8)]
    assert len(nsa) == 4 and all(e.mask.any() for e in examples)
    assert any(e.patches for e in examples)  # some came from NSA (it records its patches)
    assert any(not e.patches for e in examples)  # and some from the Perlin blend


def test_anomaly_mix_uses_what_the_user_gave(tmp_path: Path) -> None:
    images = [_noise_image(i) for i in range(4)]
    sdas = _write_folder(tmp_path / "sdas", [_noise_image(50), _noise_image(51)])
    textures = _write_folder(tmp_path / "dtd", [_noise_image(60)])
    alone = anomaly_mix(images, background=None)  # nothing given: the category's own images as textures
    assert [type(s.patterns).__name__ for s in alone.sources] == ["CategoryPatterns"]  # type: ignore[attr-defined]
    assert alone.sources[0].delta == TEXTURE_DELTA  # type: ignore[attr-defined]
    sdas_only = anomaly_mix(images, background=None, sdas=sdas)
    assert [s.delta for s in sdas_only.sources] == [SDAS_DELTA]  # type: ignore[attr-defined]
    full = anomaly_mix(images, background=None, sdas=sdas, textures=textures, nsa=params_for(None, "texture"))
    assert [type(s).__name__ for s in full.sources] == ["PerlinBlendSource", "PerlinBlendSource", "NsaSource"]
    assert full.sources[1].patterns.jitter and full.normal_share == 0.5  # type: ignore[attr-defined]
    examples = [full.example(i % 4, example_rng(4, i)) for i in range(40)]
    assert 8 <= sum(e.mask.any() for e in examples) <= 32


def test_sources_and_the_sdas_help_need_no_torch() -> None:
    assert_runs_without(
        "import edge_ad.synthesis.sources, edge_ad.synthesis.patterns, edge_ad.synthesis.sdas\n"
        "from typer.testing import CliRunner\nfrom edge_ad.cli.main import app\n"
        "r = CliRunner().invoke(app, ['sdas', 'sample', '--help'], terminal_width=200)\n"
        "assert r.exit_code == 0 and '--strength' in r.output, r.output\n",
        ["torch", "diffusers"],
    )


def test_a_smooth_pattern_is_pasted_although_the_gate_would_call_it_a_blank_frame(tmp_path: Path) -> None:
    """A plain or blurred texture is a legitimate pattern: only the blank-frame rule is off for pasted material."""
    from edge_ad.data.gate import InputRejected
    from edge_ad.data.images import read_image

    flat = np.full((48, 48, 3), 120, np.uint8)
    folder = _write_folder(tmp_path / "smooth", [flat])
    with pytest.raises(InputRejected):  # a frame this flat gets no verdict
        read_image(folder / "p0.png")
    patterns = FolderPatterns(folder)
    assert np.array_equal(patterns.pattern((48, 48), np.random.default_rng(0)), flat)
    (folder / "p0.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="p0.png"):  # every other check of the gate stays
        FolderPatterns(folder)
