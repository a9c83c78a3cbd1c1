"""The README's main job, run exactly as `edge-ad demo` runs it, held to a measured quality floor.

Slow (minutes on 2 CPU cores). The image floor is the roadmap's bar for a random backbone, 0.90; the demo measured
0.925-0.930 image AUROC on brushed_metal (isometric random draw, 30 epochs) on three machines, and 0.900-0.906 pixel
AUROC depending on the CPU, so the pixel floor is 0.88 (see PIXEL_AUROC_FLOOR). A model whose maps
do not point at defects falls far under it: torchvision's random draw gave 0.76 / 0.75 (sigma 0.1, two-sided score),
and an inverted score gives a pixel AUROC under 0.5.
INT8 (onnxruntime, the recipe the default label-free choice makes) must stay within one AUROC point of fp32 on the
same split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ad.quickstart import run_demo

IMAGE_AUROC_FLOOR = 0.90
# The demo's pixel AUROC differs by CPU with bit-identical code and data: 0.9061 (AMD EPYC, 2026-11-23), 0.9035 (Intel
# Xeon), 0.8997 (another AMD EPYC, 2026-12-01, measured on the old and the new code alike). The floor sits under all
# three and far above a model whose maps miss the defects (torchvision's draw: 0.75; an inverted score: < 0.5).
PIXEL_AUROC_FLOOR = 0.88


INT8_MAX_LOSS = 0.01  # one AUROC point, image and pixel


@pytest.mark.slow
def test_demo_reaches_its_floor_and_int8_keeps_it(tmp_path: Path) -> None:
    report = run_demo(tmp_path)
    overall = report["metrics"]["overall"]
    assert overall["image_auroc"] >= IMAGE_AUROC_FLOOR, overall
    assert overall["pixel_auroc"] >= PIXEL_AUROC_FLOOR, overall
    bundle = tmp_path / "models" / "brushed_metal"
    assert (bundle / "model.safetensors").is_file()

    # INT8 exactly as `edge-ad export --precision int8` makes it by default: the recipe is chosen without labels on the
    # held-out good images; only afterwards is the chosen model evaluated on the labelled test split.
    from edge_ad.calibration import calibrate
    from edge_ad.evaluate import evaluate_model

    int8 = calibrate(bundle)
    assert int8["labels_used"] is False, int8["selection"]
    int8_overall = evaluate_model(Path(int8["models"]["int8"]), report["data"], backend="onnxruntime")["metrics"][
        "overall"
    ]
    for metric in ("image_auroc", "pixel_auroc"):
        assert overall[metric] - int8_overall[metric] <= INT8_MAX_LOSS, (metric, overall, int8_overall)
