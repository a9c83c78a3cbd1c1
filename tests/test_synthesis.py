"""NSA generator: determinism, masks where the blend changed pixels, object overlap, labels, sources, errors, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.data.images import read_image, read_mask
from edge_ad.data.layout import test_samples
from edge_ad.datasets.demo import render_demo_sample
from edge_ad.synthesis import (
    NsaGenerator,
    NsaParams,
    batch_stream,
    estimate_background,
    example_rng,
    foreground_mask,
    params_for,
    parse_background,
    synthesize,
    synthetic_set,
)
from edge_ad.synthesis.labels import _disk, disk_median
from tests.layering import assert_runs_without

runner = CliRunner()
SIZE = 128


def _demo(category: str, n: int = 6) -> list[np.ndarray]:
    return [render_demo_sample(category, split="train", index=i, image_size=SIZE)[0] for i in range(n)]


@pytest.fixture(scope="module")
def washers() -> list[np.ndarray]:
    return _demo("washer")


@pytest.fixture(scope="module")
def fabrics() -> list[np.ndarray]:
    return _demo("woven_fabric")


def _discs(n: int, seed: int = 0) -> list[np.ndarray]:
    """Objects for the overlap test: a bright textured disc (about 20 % of the frame) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(n):
        img = rng.normal(20, 4, (SIZE, SIZE, 3))
        cy, cx = rng.integers(50, 78, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 32**2
        img[disc] = rng.normal(170, 25, (int(disc.sum()), 3))
        out.append(cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0))
    return out


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=-1)


# ---- determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_pixels_other_seed_other_pixels(washers: list[np.ndarray]) -> None:
    gen = NsaGenerator(washers, params_for("washer"), "logistic")
    a, b, c = synthetic_set(gen, 6, seed=3), synthetic_set(gen, 6, seed=3), synthetic_set(gen, 6, seed=4)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
        assert x.patches == y.patches and x.source_index == y.source_index
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c, strict=True))
    # example i depends only on (seed, i): a longer set starts with the shorter one
    longer = synthetic_set(gen, 8, seed=3)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, longer[:6], strict=True))


def test_worker_processes_give_the_same_examples(washers: list[np.ndarray]) -> None:
    gen = NsaGenerator(washers, params_for("washer"), "binary")
    inline = synthetic_set(gen, 4, seed=9)
    pooled = synthetic_set(gen, 4, seed=9, workers=1)
    pairs = zip(inline, pooled, strict=True)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in pairs)
    batches = [[0, 1], [2, 3]]
    s0 = list(batch_stream(gen, batches, seed=2))
    assert [im.shape for im, _ in s0] == [(2, SIZE, SIZE, 3)] * 2
    assert not np.array_equal(s0[0][0][0], washers[0])  # the stream really blends


# ---- masks follow the blend ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["washer", "woven_fabric"])
def test_mask_is_where_the_blend_changed_the_image(category: str, washers, fabrics) -> None:
    images = washers if category == "washer" else fabrics
    gen = NsaGenerator(images, params_for(category), "binary")
    for i, ex in enumerate(synthetic_set(gen, 10, seed=1)):
        dest = images[i % len(images)]
        assert ex.is_anomalous and ex.patches
        change = _change(ex.image, dest)
        inside = ex.mask > 0
        # labelled pixels changed by more than the tolerance (the 5x5 median filter may fill a few holes)
        assert (change[inside] > gen.params.label_tol).mean() > 0.85
        boxes = np.zeros(inside.shape, bool)
        for p in ex.patches:
            y, x, h, w = p.dest_box
            boxes[y : y + h, x : x + w] = True
        visible = (change > 8) & ~inside
        assert not (visible & ~boxes).any(), "pixels changed outside every pasted patch"
        if gen.params.background is None:
            assert visible.sum() <= 0.02 * inside.sum()
        else:  # unlabelled changes only where background was blended onto background
            fg = foreground_mask(dest, gen.params.background) > 0
            assert (visible & fg).sum() <= 0.05 * inside.sum()


# ---- objects: patches land on the part ----------------------------------------------------------------------------


def test_object_patches_overlap_the_foreground_and_would_not_without_it() -> None:
    images = _discs(6)
    background = (20.0, 20.0)
    constrained = NsaParams(kind="object", background=background)
    free = constrained.replace(background=None)

    def shares(params: NsaParams) -> list[float]:
        out = []
        for i, ex in enumerate(synthetic_set(NsaGenerator(images, params), 30, seed=5)):
            fg = foreground_mask(images[i % len(images)], background)
            for p in ex.patches:
                y, x, h, w = p.dest_box
                out.append(float(fg[y : y + h, x : x + w].mean()))
        return out

    # overlap > 25 % of a source patch that is > 25 % object -> > 6.25 % of the destination box is object
    assert min(shares(constrained)) > 0.0625
    assert min(shares(free)) < 0.0625  # the control: unconstrained patches do land on the background


def test_background_estimated_from_good_images(washers: list[np.ndarray], fabrics: list[np.ndarray]) -> None:
    level, threshold = estimate_background(washers)
    border = np.concatenate([im[:4].reshape(-1, 3) for im in washers]).mean(axis=-1)
    assert abs(level - np.median(border)) < 5 and 10 <= threshold <= 100
    share = np.mean([foreground_mask(im, (level, threshold)).mean() for im in washers])
    assert 0.1 < share < 0.7  # the ring, not the frame
    with pytest.raises(ValueError, match="cannot estimate the background"):
        estimate_background(fabrics)
    assert NsaGenerator(washers, params_for("washer")).params.background == (level, threshold)


# ---- labels ----------------------------------------------------------------------------------------------------------


def test_labels_in_range_and_consistent_with_the_mask(washers: list[np.ndarray]) -> None:
    for mode in ("binary", "continuous", "logistic"):
        gen = NsaGenerator(washers, params_for("washer"), mode)
        for ex in synthetic_set(gen, 5, seed=2):
            lab, m = ex.label, ex.mask > 0
            assert lab.dtype == np.float32 and lab.shape == m.shape
            assert lab.min() >= 0 and lab.max() <= 1
            if mode == "binary":
                assert set(np.unique(lab)) <= {0.0, 1.0} and np.array_equal(lab > 0, m)
            elif mode == "logistic":
                assert not lab[~m].any() and (lab[m] > 0).all()
            else:  # the median of the change: only where most of the disk is labelled
                assert (lab > 0).sum() <= 1.05 * m.sum() and lab.max() > 0


def test_disk_median_equals_scipy() -> None:
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(0)
    values = np.zeros((60, 70), np.float32)
    values[10:40, 5:50] = rng.integers(0, 766, (30, 45)) / 3
    values[rng.random(values.shape) < 0.1] = 7.0
    values[0:3, 60:70] = 200.0  # at the border: edges repeated
    np.testing.assert_array_equal(disk_median(values), median_filter(values, footprint=_disk(5), mode="nearest"))


# ---- the patch comes from another image ----------------------------------------------------------------------------


def test_patch_comes_from_the_recorded_other_image() -> None:
    rng = np.random.default_rng(1)
    images = [cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), (3, 3), 0) for _ in range(5)]
    bounds = ((0.15, 0.3), (0.15, 0.3))  # patches of 38 pixels or more: enough gradients to tell images apart
    params = NsaParams(kind="object", width_bounds=bounds, background=None, resize=False, num_patches=1)
    gen = NsaGenerator(images, params)

    def lap(a: np.ndarray) -> np.ndarray:  # 3 pixels off the box's fixed boundary
        return cv2.Laplacian(a.astype(np.float32).mean(axis=-1), cv2.CV_32F)[3:-3, 3:-3].ravel()

    for i, ex in enumerate(synthetic_set(gen, 12, seed=0)):
        dest = i % len(images)
        assert ex.source_index is not None and ex.source_index != dest
        (p,) = ex.patches
        y, x, h, w = p.dest_box
        sy, sx, sh, sw = p.source_box
        assert (sh, sw) == (h, w)
        got = lap(ex.image[y : y + h, x : x + w])
        corr = {j: np.corrcoef(got, lap(im[sy : sy + h, sx : sx + w]))[0, 1] for j, im in enumerate(images)}
        assert corr[ex.source_index] > 0.7  # normal clone copies the source's gradients
        assert max(c for j, c in corr.items() if j != ex.source_index) < 0.3


def test_transform_is_applied_to_destination_and_source(washers: list[np.ndarray]) -> None:
    seen: list[tuple[int, int]] = []

    def crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # a training loop's random crop
        y, x = rng.integers(0, 17, 2)
        seen.append((int(y), int(x)))
        return img[y : y + 112, x : x + 112]

    gen = NsaGenerator(washers, params_for("washer"), "logistic", transform=crop)
    images, labels = gen.batch([0, 1, 2], np.random.default_rng(0))
    assert images.shape == (3, 112, 112, 3) and labels.shape == (3, 112, 112)
    assert len(seen) >= 6 and labels.max() > 0  # two crops per draw, and the blend is labelled


def test_synthesize_returns_the_image_unchanged_when_no_patch_fits() -> None:
    black = np.full((SIZE, SIZE, 3), 5, np.uint8)  # no object anywhere under this background
    params = NsaParams(kind="object", background=(5.0, 20.0))
    ex = synthesize(black, black.copy(), params, np.random.default_rng(0))
    assert not ex.is_anomalous and not ex.patches and np.array_equal(ex.image, black)


# ---- bad arguments ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"width_bounds": ((0.03, 0.6), (0.03, 0.4))}, "half-widths"),
        ({"num_patches": 0}, "num_patches"),
        ({"gamma": (0.0, 0.05, 0.03)}, "gamma"),
        ({"resize_bounds": (1.5, 1.0)}, "resize_bounds"),
        ({"background": (300.0, 20.0)}, "background"),
        ({"min_overlap_pct": 1.0}, "min_overlap_pct"),
        ({"kind": "liquid"}, "kind"),
    ],
)
def test_bad_params_are_refused(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NsaParams(**{"kind": "object", **changes})


def test_bad_generator_arguments(washers: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="at least 2 good images"):
        NsaGenerator(washers[:1], params_for("washer"))
    with pytest.raises(ValueError, match="label must be"):
        NsaGenerator(washers, params_for("washer"), "fuzzy")
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        NsaGenerator([washers[0], washers[1].astype(np.float32)], params_for("washer"))
    with pytest.raises(ValueError, match="seed"):
        example_rng(-1)
    with pytest.raises(ValueError, match="'auto'"):
        synthesize(washers[0], washers[1], params_for("washer"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="--kind"):
        params_for("gearbox")
    assert params_for("gearbox", "texture").clone == "mixed" and params_for("screw").clone == "normal"
    assert parse_background("20,20") == (20.0, 20.0) and parse_background("none") is None
    with pytest.raises(ValueError, match="LEVEL,THRESHOLD"):
        parse_background("dark")


def test_reference_table_values() -> None:
    screw = params_for("screw")
    assert screw.width_bounds == ((0.03, 0.12), (0.03, 0.12)) and screw.num_patches == 4
    assert screw.logistic == (1, 3) and screw.background == (200, 60) and screw.min_object_pct == 0.5
    carpet = params_for("carpet")
    assert carpet.kind == "texture" and carpet.resize_bounds == (0.5, 2.0) and carpet.background is None
    assert params_for("cable").background is None and params_for("cable").width_bounds[0] == (0.05, 0.4)


# ---- CLI -------------------------------------------------------------------------------------------------------------


def test_synth_cli_writes_what_the_layout_reader_reads(tiny_demo: Path, tmp_path: Path) -> None:
    args = ["synth", str(tiny_demo.parent), "--category", "washer", "--out", str(tmp_path), "-n", "5"]
    result = runner.invoke(app, [*args, "--label", "logistic", "--seed", "4"])
    assert result.exit_code == 0, result.output
    samples = test_samples(tmp_path / "washer")
    assert [(s.label, s.defect) for s in samples] == [(1, "synthetic")] * 5
    meta = json.loads((tmp_path / "washer" / "synthetic.json").read_text())
    assert meta["seed"] == 4 and meta["count"] == 5 and meta["params"]["clone"] == "normal"
    for s, rec in zip(samples, meta["examples"], strict=True):
        img = read_image(s.path)
        mask = read_mask(s.mask_path, img.shape[:2])
        assert mask.any() and rec["source"] != rec["destination"]
        label = cv2.imread(str(s.mask_path).replace("_mask.png", "_label.png"), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint16 and label.shape == mask.shape
        assert not label[~mask].any() and (label[mask] > 0).all()
    assert (tmp_path / "washer" / "synthetic_preview.png").is_file()
    # a second, smaller run leaves no stale examples behind
    assert runner.invoke(app, [*args[:-1], "2"]).exit_code == 0
    assert len(test_samples(tmp_path / "washer")) == 2


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--category", "washer", "--label", "fuzzy"], "label must be"),
        (["--category", "washer", "--background", "dark"], "LEVEL,THRESHOLD"),
        (["--category", "washer", "-n", "0"], "integer >= 1"),
        (["--category", "nope"], "not found"),
    ],
)
def test_synth_cli_bad_input_is_one_line(tiny_demo: Path, tmp_path: Path, extra: list[str], match: str) -> None:
    result = runner.invoke(app, ["synth", str(tiny_demo.parent), "--out", str(tmp_path), *extra])
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not (tmp_path / "washer").exists()  # refused before anything was written


def test_synth_cli_unknown_category_asks_for_kind(tiny_demo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gearbox"  # a plain folder of good images, a category NSA's table does not know
    shutil.copytree(tiny_demo / "train" / "good", folder)
    result = runner.invoke(app, ["synth", str(folder), "--out", str(tmp_path / "out"), "-n", "1"])
    assert result.exit_code == 2 and "--kind" in result.output
    ok = runner.invoke(app, ["synth", str(folder), "--out", str(tmp_path / "out"), "-n", "1", "--kind", "texture"])
    assert ok.exit_code == 0, ok.output
    assert len(test_samples(tmp_path / "out" / "gearbox")) == 1


def test_synthesis_never_imports_torch() -> None:
    code = "import edge_ad.synthesis, edge_ad.datasets.synthetic, edge_ad.synthesis.sets"
    assert_runs_without(code, ["torch", "scipy", "skimage"])
