"""NSA's Poisson blending choice: the reference's rule by kind, or normal / mixed cloning chosen by the user."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.models.nsa.trainer import NsaTrainConfig
from edge_ad.synthesis import NsaParams, params_for, synthesize

runner = CliRunner()


def test_auto_follows_the_kind_and_an_explicit_blend_wins() -> None:
    assert NsaParams(kind="texture").clone == "mixed" and NsaParams(kind="object").clone == "normal"
    assert NsaParams(kind="texture", blend="normal").clone == "normal"
    assert NsaParams(kind="object", blend="mixed").clone == "mixed"
    with pytest.raises(ValueError, match="blend must be one of auto, normal, mixed"):
        NsaParams(kind="texture", blend="seamless")
    with pytest.raises(ValueError, match="blend must be"):
        NsaTrainConfig(blend="poisson")


def test_blend_survives_json_and_older_records_read_as_auto() -> None:
    p = params_for("carpet").replace(blend="normal")
    d = json.loads(json.dumps(p.to_json()))
    assert d["blend"] == "normal" and d["clone"] == "normal"
    assert NsaParams.from_json(d) == p
    older = {k: v for k, v in d.items() if k != "blend"}  # a bundle written before the field existed
    assert NsaParams.from_json(older).blend == "auto" and NsaParams.from_json(older).clone == "mixed"


def _busy_and_flat() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    busy = np.repeat(rng.integers(0, 256, (96, 96, 1), dtype=np.uint8), 3, axis=2)
    flat = np.full((96, 96, 3), 128, np.uint8)
    return busy, flat


def _detail(img: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    """Mean |Laplacian| of the grey image (fine detail), inside ``box`` three pixels in from its edge."""
    import cv2

    lap = np.abs(cv2.Laplacian(img[..., 0].astype(np.float32), cv2.CV_32F))
    if box is None:
        return float(lap.mean())
    y, x, h, w = box
    inner = lap[y + 3 : y + h - 3, x + 3 : x + w - 3]
    assert inner.size > 50
    return float(inner.mean())


def test_normal_clone_can_make_a_smooth_patch_on_a_busy_texture_and_mixed_cannot() -> None:
    busy, flat = _busy_and_flat()
    params = params_for("carpet").replace(num_patches=1, width_bounds=((0.2, 0.3), (0.2, 0.3)))
    ex = {b: synthesize(busy, flat, params.replace(blend=b), np.random.default_rng(3)) for b in ("normal", "mixed")}
    assert ex["normal"].patches == ex["mixed"].patches  # the same draw of the patch; only the blend differs
    detail = {b: _detail(e.image, e.patches[0].dest_box) for b, e in ex.items()}
    texture = _detail(busy)
    assert detail["normal"] < 0.3 * texture  # the flat source's gradients: the texture is gone under the patch
    assert detail["mixed"] > 0.8 * texture  # the stronger gradient wins: the texture stays
    assert ex["normal"].is_anomalous


def test_synth_cli_records_the_blend(tiny_demo: Path, tmp_path: Path) -> None:
    args = ["synth", str(tiny_demo.parent), "--category", "washer", "--out", str(tmp_path), "-n", "2"]
    result = runner.invoke(app, [*args, "--blend", "mixed"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "washer" / "synthetic.json").read_text())
    assert meta["params"]["blend"] == "mixed" and meta["params"]["clone"] == "mixed"  # washer is an object
    bad = runner.invoke(app, [*args, "--blend", "seamless"])
    assert bad.exit_code == 2 and "blend must be one of" in bad.output and "Traceback" not in bad.output


def test_train_refuses_nsa_options_for_simplenet(tiny_demo: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(tiny_demo), "-o", str(tmp_path / "b"), "--random-backbone",
                                 "--blend", "normal"])  # fmt: skip
    assert result.exit_code == 2 and "--blend: NSA options (--model nsa)" in result.output
    assert not (tmp_path / "b").exists()


def test_the_bundle_records_the_training_blend_and_validation_keeps_the_reference(
    tiny_demo: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.nsa.model import NsaConfig
    from edge_ad.models.nsa.trainer import train_nsa_bundle

    bundle = train_nsa_bundle(
        tiny_demo, tmp_path / "washer", preprocessing=Preprocessing(image_size=64, resize=72),
        model_cfg=NsaConfig(width=8), train_cfg=NsaTrainConfig(epochs=1, batch_size=4, blend="mixed"),
    )  # fmt: skip
    training = json.loads((bundle / "config.json").read_text())["training"]
    assert training["synthesis"]["blend"] == "mixed" and training["synthesis"]["clone"] == "mixed"
    assert training["synthetic_validation"]["params"]["clone"] == "normal"  # the washer's own rule
