"""Post-processing (SIMPLENET_SPEC.md section 8): the numpy and torch/ONNX implementations vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_radius, gaussian_taps, min_map_size
from edge_ad.postprocess.numpy_ops import gaussian_smooth, postprocess, resize_bilinear, resize_matrix
from edge_ad.postprocess.torch_ops import AnomalyMapHead, reflect_pad
from tests.layering import assert_runs_without

SIZES = [(17, 17), (28, 28), (50, 33), (64, 48), (224, 224)]


def _random_maps(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth-ish structure plus noise plus an offset: scores are unbounded and rarely centred.
    return (rng.standard_normal(shape) * 2.0 + 1.5).astype(np.float32)


def _scipy_smooth(maps: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """Reference: scipy's Gaussian per image (sigma 0 on the batch axis means 'leave it alone')."""
    return ndi.gaussian_filter(maps.astype(np.float64), sigma=(0, SIGMA, SIGMA), mode=mode, truncate=TRUNCATE)


def _assert_close_rel(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-5) -> None:
    """max |actual - expected| <= rel * max |expected| (relative to the map's scale)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-12)
    err = float(np.abs(actual - expected).max())
    assert err <= rel * scale, f"max abs diff {err:.3g} > {rel:g} * {scale:.3g}"


def _torch_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


# --- Gaussian taps ------------------------------------------------------------------------------------------


def _scipy_kernel(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    try:
        from scipy.ndimage._filters import _gaussian_kernel1d
    except ImportError:  # private helper moved: filter a delta instead (symmetric kernel, so same taps)
        delta = np.zeros(4 * radius + 1)
        delta[2 * radius] = 1.0
        return ndi.gaussian_filter1d(delta, sigma, mode="constant", truncate=truncate)[radius : 3 * radius + 1]
    return _gaussian_kernel1d(sigma, 0, radius)


@pytest.mark.parametrize(("sigma", "truncate"), [(4.0, 4.0), (2.0, 4.0), (1.5, 3.0), (4.0, 2.6)])
def test_gaussian_taps_match_scipy(sigma: float, truncate: float) -> None:
    taps = gaussian_taps(sigma, truncate)
    expected = _scipy_kernel(sigma, truncate)
    assert taps.dtype == np.float64
    assert taps.shape == expected.shape == (2 * gaussian_radius(sigma, truncate) + 1,)
    np.testing.assert_allclose(taps, expected, rtol=1e-12, atol=1e-15)
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)


def test_default_kernel_is_33_taps() -> None:
    assert (SIGMA, TRUNCATE) == (4.0, 4.0)
    assert gaussian_radius() == 16
    assert gaussian_taps().shape == (33,)
    assert min_map_size() == 17


# --- numpy Gaussian vs scipy --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_numpy_gaussian_smooth_matches_scipy_reflect(size: tuple[int, int]) -> None:
    maps = _random_maps((3, *size), seed=size[0] * 1000 + size[1])
    smoothed = gaussian_smooth(maps)
    assert smoothed.dtype == np.float32 and smoothed.shape == maps.shape
    _assert_close_rel(smoothed, _scipy_smooth(maps))
    # scipy on the float32 map itself (float32 output, rounded between the two axes) agrees as well
    _assert_close_rel(smoothed, ndi.gaussian_filter(maps, sigma=(0, 4, 4), mode="reflect", truncate=4.0))


def test_torch_reflect_padding_is_scipy_mirror_not_reflect() -> None:
    """F.pad(mode="reflect") (d c b | a b c d) is scipy's "mirror": using it would fail the tests above."""
    maps = _random_maps((2, 28, 28), seed=7)
    resized = _torch_resize(maps, (224, 224))
    taps = torch.from_numpy(gaussian_taps()).float()
    x = torch.from_numpy(resized)[:, None]
    x = F.conv2d(F.pad(x, (16, 16, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, 16, 16), mode="reflect"), taps.view(1, 1, -1, 1))
    torch_reflect = x[:, 0].numpy()

    reflect = _scipy_smooth(resized, mode="reflect")
    mirror = _scipy_smooth(resized, mode="mirror")
    _assert_close_rel(torch_reflect, mirror)  # what F.pad "reflect" really is
    diff = np.abs(torch_reflect - reflect)
    assert diff.max() > 1e3 * 1e-5 * np.abs(reflect).max()  # far outside the tolerance ...
    assert diff[:, 40:-40, 40:-40].max() < 1e-5  # ... and only near the borders
    # our padding is scipy's reflect: the edge sample is repeated
    padded = reflect_pad(torch.arange(5.0)[None], 3, dim=1)
    assert padded.tolist() == [[2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0]]
    np.testing.assert_array_equal(padded.numpy(), np.pad(np.arange(5.0)[None], ((0, 0), (3, 3)), mode="symmetric"))


# --- resize -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((28, 28), (224, 224)),
        ((7, 9), (50, 33)),
        ((28, 28), (20, 20)),
        ((13, 5), (13, 40)),
        ((1, 1), (17, 17)),
    ],
)
def test_numpy_resize_matches_torch_interpolate(src: tuple[int, int], dst: tuple[int, int]) -> None:
    maps = _random_maps((2, *src), seed=3)
    ours = resize_bilinear(maps, dst)
    assert ours.dtype == np.float32 and ours.shape == (2, *dst)
    # float32 rounding of torch's source coordinates: ~1e-7 relative upsampling, ~1e-6 downsampling
    _assert_close_rel(ours, _torch_resize(maps, dst), rel=1e-5)
    # [N, 1, h, w] is accepted too
    np.testing.assert_array_equal(resize_bilinear(maps[:, None], dst), ours)


def test_resize_matrix_rows_are_convex_weights() -> None:
    for n_in, n_out in [(28, 224), (7, 50), (28, 20), (1, 17)]:
        weights = resize_matrix(n_in, n_out)
        assert weights.shape == (n_out, n_in)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
        assert (weights >= 0).all()


# --- torch head and the full pipeline -----------------------------------------------------------------------


def _reference_pipeline(patch: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Spec section 8, literally: torch's bilinear resize, then scipy's gaussian_filter (reflect)."""
    return patch.reshape(len(patch), -1).max(axis=1), _scipy_smooth(_torch_resize(patch, size))


@pytest.mark.parametrize(("patch_hw", "out_hw"), [((28, 28), (224, 224)), ((8, 8), (64, 64)), ((9, 7), (40, 17))])
def test_torch_head_matches_scipy_reference(patch_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    patch = _random_maps((4, *patch_hw), seed=11)
    head = AnomalyMapHead(out_hw).eval()
    with torch.no_grad():
        score, amap = head(torch.from_numpy(patch)[:, None])
    assert score.shape == (4,) and amap.shape == (4, *out_hw)
    ref_score, ref_map = _reference_pipeline(patch, out_hw)
    np.testing.assert_array_equal(score.numpy(), ref_score)
    _assert_close_rel(amap.numpy(), ref_map)


@pytest.mark.parametrize(("patch_hw", "out_hw"), [((28, 28), (224, 224)), ((8, 8), (64, 64)), ((9, 7), (40, 17))])
def test_numpy_postprocess_matches_torch_head_and_scipy(patch_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    patch = _random_maps((4, *patch_hw), seed=12)
    score, amap = postprocess(patch, out_hw)
    assert score.dtype == np.float32 and amap.dtype == np.float32
    assert score.shape == (4,) and amap.shape == (4, *out_hw)
    with torch.no_grad():
        t_score, t_map = AnomalyMapHead(out_hw)(torch.from_numpy(patch)[:, None])
    np.testing.assert_array_equal(score, t_score.numpy())
    _assert_close_rel(amap, t_map.numpy())
    _assert_close_rel(amap, _reference_pipeline(patch, out_hw)[1])
    # [N, 1, h, w] input gives the same
    score4, amap4 = postprocess(patch[:, None], out_hw)
    np.testing.assert_array_equal(score4, score)
    np.testing.assert_array_equal(amap4, amap)


def test_image_score_is_max_of_raw_patch_map() -> None:
    patch = np.zeros((2, 28, 28), dtype=np.float32)
    patch[0, 5, 9] = 10.0  # a single hot patch: smoothing spreads it out, the raw max keeps it
    patch[1] = -3.0
    patch[1, 27, 0] = -1.0
    score, amap = postprocess(patch, (224, 224))
    np.testing.assert_array_equal(score, [10.0, -1.0])
    assert amap[0].max() < 0.5 * score[0]  # so max(anomaly_map) would be a different score
    with torch.no_grad():
        t_score, _ = AnomalyMapHead((224, 224))(torch.from_numpy(patch)[:, None])
    np.testing.assert_array_equal(t_score.numpy(), [10.0, -1.0])


def test_too_small_maps_are_rejected() -> None:
    patch = _random_maps((1, 4, 4))
    with pytest.raises(ValueError, match="at least 17"):
        postprocess(patch, (16, 64))
    with pytest.raises(ValueError, match="at least 17"):
        gaussian_smooth(_random_maps((1, 64, 16)))
    with pytest.raises(ValueError, match="at least 17"):
        AnomalyMapHead((64, 16))
    # the smallest supported size is still exact against scipy
    _assert_close_rel(postprocess(patch, (17, 17))[1], _reference_pipeline(patch, (17, 17))[1])
    # and a smaller sigma allows smaller maps
    assert postprocess(patch, (9, 9), sigma=2.0)[1].shape == (1, 9, 9)


# --- ONNX ---------------------------------------------------------------------------------------------------

ONNX_OPS = {
    "MatMul",  # the head's resize + Gaussian as two matrix products (numpy_ops.head_matrix)
    "Resize",
    "Slice",
    "Concat",
    "Conv",
    "ReduceMax",
    "Squeeze",
    "Reshape",
    "Unsqueeze",
    "Shape",
    "Constant",
}


def test_onnx_export_runs_in_onnxruntime(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    head = AnomalyMapHead((224, 224)).eval()
    path = tmp_path / "head.onnx"
    torch.onnx.export(
        head,
        (torch.zeros(2, 1, 28, 28),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["patch_scores"],
        output_names=["image_score", "anomaly_map"],
        dynamic_axes={"patch_scores": {0: "batch"}, "image_score": {0: "batch"}, "anomaly_map": {0: "batch"}},
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert ops <= ONNX_OPS, f"unexpected ONNX ops {sorted(ops - ONNX_OPS)}"
    assert "Pad" not in ops  # ONNX Pad(reflect) is scipy's mirror

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    patch = _random_maps((3, 1, 28, 28), seed=5)  # a batch size other than the traced one
    ort_score, ort_map = session.run(None, {"patch_scores": patch})
    with torch.no_grad():
        t_score, t_map = head(torch.from_numpy(patch))
    np.testing.assert_array_equal(ort_score, t_score.numpy())
    _assert_close_rel(ort_map, t_map.numpy())
    _assert_close_rel(ort_map, _reference_pipeline(patch[:, 0], (224, 224))[1])


# --- layering -----------------------------------------------------------------------------------------------


def test_numpy_postprocess_imports_neither_torch_nor_scipy() -> None:
    code = (
        "import edge_ad.postprocess.gaussian, edge_ad.postprocess.numpy_ops\n"
        "import numpy as np\n"
        "edge_ad.postprocess.numpy_ops.postprocess(np.zeros((1, 4, 4), np.float32), (32, 32))\n"
    )
    assert_runs_without(code, ["torch", "scipy"])


# --- the matrix head against the step-by-step head it replaced ------------------------------------------------

# The head's stated tolerance: its maps equal the step-by-step form (bilinear resize, then the 33-tap Gaussian,
# float64 accumulation) within 1e-5 of the map's range (max - min). Measured: 1e-7 to 6e-7 (float32 products).
HEAD_TOLERANCE = 1e-5


def _step_by_step(patch: np.ndarray, size: tuple[int, int], sigma: float, image_score: str) -> tuple:
    """The head as it was computed before the matrices: resize, then smooth (float64 throughout), then score."""
    resized = resize_bilinear(patch.astype(np.float64), size)
    amap = resized if sigma == 0 else gaussian_smooth(resized, sigma)
    flat = patch.reshape(len(patch), -1).astype(np.float64)
    return (flat.max(axis=1) if image_score == "max" else flat.mean(axis=1)), amap


def _rel_range(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max() / max(float(expected.max() - expected.min()), 1e-12))


@pytest.mark.parametrize("sigma", [0.0, 2.5, 4.0])
@pytest.mark.parametrize("image_score", ["max", "mean"])
@pytest.mark.parametrize(
    ("patch_hw", "out_hw"),
    [((28, 28), (224, 224)), ((8, 8), (64, 64)), ((9, 7), (40, 17)), ((14, 20), (112, 160)), ((64, 48), (64, 48))],
)
def test_matrix_head_equals_step_by_step_head(
    patch_hw: tuple[int, int], out_hw: tuple[int, int], sigma: float, image_score: str
) -> None:
    patch = _random_maps((3, *patch_hw), seed=sum(patch_hw) + int(sigma * 10))
    patch[1] *= 40.0  # scores of another scale in the same batch
    score, amap = postprocess(patch, out_hw, sigma=sigma, image_score=image_score)
    ref_score, ref_map = _step_by_step(patch, out_hw, sigma, image_score)
    assert score.dtype == amap.dtype == np.float32 and amap.shape == (3, *out_hw)
    np.testing.assert_allclose(score, ref_score, rtol=1e-6)  # the raw map's max / mean, untouched
    for i in range(3):  # per image: each map is held to its own range
        assert _rel_range(amap[i], ref_map[i]) <= HEAD_TOLERANCE
    # and the scores and maps of the old and new head rank images alike
    assert np.argsort(score).tolist() == np.argsort(ref_score).tolist()
    assert (
        np.argsort(amap.reshape(3, -1).max(axis=1)).tolist() == np.argsort(ref_map.reshape(3, -1).max(axis=1)).tolist()
    )


def test_matrix_head_is_not_the_unsmoothed_or_mirrored_map() -> None:
    """The test above can fail: the resize alone, or scipy's "mirror" boundary, is far outside the tolerance."""
    patch = _random_maps((2, 28, 28), seed=21)
    _, amap = postprocess(patch, (224, 224))
    resized = resize_bilinear(patch, (224, 224))
    assert _rel_range(amap, resized) > 1e3 * HEAD_TOLERANCE
    mirror = _scipy_smooth(resized, mode="mirror")
    assert _rel_range(amap, mirror) > 10 * HEAD_TOLERANCE
    assert _rel_range(amap, _scipy_smooth(resized)) <= HEAD_TOLERANCE


def test_head_matrix_is_gaussian_after_resize() -> None:
    from edge_ad.postprocess.numpy_ops import head_matrix, smoothing_matrix

    for n_in, n_out, sigma in [(28, 224, 4.0), (7, 40, 2.5), (9, 17, 4.0), (20, 20, 2.5)]:
        matrix = head_matrix(n_in, n_out, sigma)
        assert matrix.shape == (n_out, n_in) and not matrix.flags.writeable
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)  # a weighted average per output pixel
        assert (matrix >= 0).all()
        np.testing.assert_allclose(matrix, smoothing_matrix(n_out, sigma) @ resize_matrix(n_in, n_out), atol=1e-15)
        # the smoothing matrix's columns are the Gaussian of a unit impulse, scipy's "reflect" boundary included
        impulses = np.eye(n_out)[None]
        expected = ndi.gaussian_filter1d(impulses[0], sigma, axis=0, mode="reflect", truncate=TRUNCATE)
        np.testing.assert_allclose(smoothing_matrix(n_out, sigma), expected, atol=1e-12)
    np.testing.assert_array_equal(head_matrix(28, 224, 0.0), resize_matrix(28, 224))
    np.testing.assert_array_equal(head_matrix(224, 224, 4.0), smoothing_matrix(224, 4.0))  # resize 1:1 is identity
    assert head_matrix(28, 224, 4.0, dtype="float32").dtype == np.float32
    with pytest.raises(ValueError, match="at least 17"):
        smoothing_matrix(16, 4.0)


def test_matrix_head_keeps_float64_input_in_float64() -> None:
    patch = _random_maps((2, 9, 7), seed=4).astype(np.float64)
    score, amap = postprocess(patch, (40, 17), sigma=2.5)
    assert score.dtype == amap.dtype == np.float64
    assert _rel_range(amap, _step_by_step(patch, (40, 17), 2.5, "max")[1]) <= 1e-12


@pytest.mark.parametrize("sigma", [2.5, 4.0])
@pytest.mark.parametrize(("patch_hw", "out_hw"), [((28, 28), (224, 224)), ((9, 7), (40, 17)), ((14, 20), (112, 160))])
def test_numpy_and_torch_heads_agree(patch_hw: tuple[int, int], out_hw: tuple[int, int], sigma: float) -> None:
    patch = _random_maps((3, *patch_hw), seed=31)
    score, amap = postprocess(patch, out_hw, sigma=sigma)
    head = AnomalyMapHead(out_hw, sigma=sigma).eval()
    with torch.no_grad():
        t_score, t_map = head(torch.from_numpy(patch)[:, None])
        t_map_again = head(torch.from_numpy(patch[:1]))[1]  # [N, h, w] input, cached matrices, another batch
    np.testing.assert_array_equal(t_score.numpy(), score)
    assert _rel_range(t_map.numpy(), amap) <= HEAD_TOLERANCE
    np.testing.assert_allclose(t_map_again.numpy(), t_map.numpy()[:1], rtol=0, atol=1e-6 * np.abs(amap).max())
    assert _rel_range(t_map.numpy(), _step_by_step(patch, out_hw, sigma, "max")[1]) <= HEAD_TOLERANCE
    with torch.no_grad():  # float64 in, float64 matrices
        t64 = head(torch.from_numpy(patch.astype(np.float64))[:, None])[1]
    assert t64.dtype == torch.float64
    assert _rel_range(t64.numpy(), _step_by_step(patch, out_hw, sigma, "max")[1]) <= 1e-12


@pytest.mark.parametrize("size", [(17, 17), (64, 48), (224, 224)])
def test_torch_smooth_matches_scipy_at_full_size(size: tuple[int, int]) -> None:
    """NSA's head smooths its full-size map with ``AnomalyMapHead.smooth``: the Gaussian alone, scipy "reflect"."""
    maps = _random_maps((2, *size), seed=41)
    with torch.no_grad():
        smoothed = AnomalyMapHead(size).smooth(torch.from_numpy(maps)[:, None])[:, 0].numpy()
    assert _rel_range(smoothed, _scipy_smooth(maps)) <= HEAD_TOLERANCE
    assert _rel_range(smoothed, gaussian_smooth(maps)) <= HEAD_TOLERANCE
    with pytest.raises(ValueError, match="at least 17"):
        AnomalyMapHead(size).smooth(torch.zeros(1, 1, 16, 32))


def test_empty_batch_gives_empty_outputs() -> None:
    for image_score in ("max", "mean"):
        score, amap = postprocess(np.zeros((0, 28, 28), np.float32), (224, 224), image_score=image_score)
        assert score.shape == (0,) and amap.shape == (0, 224, 224) and amap.dtype == np.float32
    with torch.no_grad():
        t_score, t_map = AnomalyMapHead((224, 224))(torch.zeros(0, 1, 28, 28))
    assert t_score.shape == (0,) and t_map.shape == (0, 224, 224)
