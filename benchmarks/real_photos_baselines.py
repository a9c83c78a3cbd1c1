"""Training-free reference points on the real photographs: how much a defect says to simple local features.

Why: when a family scores badly on :mod:`edge_ad.data.photos`, this tells the reader whether the features it starts
from carry the defect at all (the random WideResNet that SimpleNet's no-download path uses) and what a plain
classical detector reaches (local grey-level statistics). Two detectors, fitted on each category's good training
crops and scored on the tune and report splits:

* ``local_stats_knn``: per pixel of the 128-pixel crop, local mean, standard deviation and gradient energy at
  three Gaussian scales (sigma 1.5, 3, 6; nine values, standardised on the good crops); the score is the mean
  distance to the 3 nearest of 60,000 good-crop pixels, smoothed (sigma 2). Image score: the map's maximum
  eight pixels in from the border (the filters' padding).
* ``random_backbone``: the training-free Mahalanobis probe of :mod:`edge_ad.benchmarks.probe_random_backbone` on the
  random (isometric) WideResNet's layers and SimpleNet's feature mix, with the default preprocessing.

    python -m edge_ad.benchmarks.real_photos_baselines --work /tmp/photos
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench import machine_info  # noqa: E402
from edge_ad.benchmarks.probe_random_backbone import load_split, probe  # noqa: E402
from edge_ad.data.images import read_image, read_mask  # noqa: E402
from edge_ad.data.layout import test_samples, train_images  # noqa: E402
from edge_ad.data.photos import PHOTO_CATEGORIES, SPLITS, make_photo_dataset  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.metrics import auroc, pixel_auroc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "real_photos_baselines.json"
SCALES = (1.5, 3.0, 6.0)
BANK = 60_000
BORDER = 8


def local_stats(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 9]: local mean, standard deviation and gradient energy of the grey image at each of SCALES."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    planes = []
    for s in SCALES:
        mean = cv2.GaussianBlur(g, (0, 0), s)
        var = cv2.GaussianBlur(g * g, (0, 0), s) - mean * mean
        planes += [mean, np.sqrt(np.maximum(var, 0.0)), cv2.GaussianBlur(grad, (0, 0), s)]
    return np.stack(planes, axis=-1)


def _knn_distance(bank: torch.Tensor, queries: torch.Tensor, k: int = 3) -> torch.Tensor:
    bank_sq = (bank * bank).sum(1)
    out = []
    for chunk in queries.split(4096):
        d = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ bank.T + bank_sq
        out.append(d.clamp_min(0).topk(k, largest=False).values.mean(1).sqrt())
    return torch.cat(out)


def local_stats_knn(category_dir: Path, seed: int = 0) -> dict[str, float]:
    """Fit on the category's good training crops, score its test split: image and pixel AUROC."""
    train = np.concatenate(
        [local_stats(read_image(p)).reshape(-1, 3 * len(SCALES)) for p in train_images(category_dir)]
    )
    mu, sd = train.mean(0), train.std(0) + 1e-6
    pick = np.random.default_rng(seed).choice(len(train), min(BANK, len(train)), replace=False)
    bank = torch.from_numpy((train[pick] - mu) / sd)
    labels, images, maps, masks = [], [], [], []
    for s in test_samples(category_dir):
        img = read_image(s.path)
        f = torch.from_numpy(((local_stats(img) - mu) / sd).reshape(-1, bank.shape[1]).astype(np.float32))
        m = cv2.GaussianBlur(_knn_distance(bank, f).numpy().reshape(img.shape[:2]), (0, 0), 2.0)
        labels.append(s.label)
        maps.append(m)
        images.append(m[BORDER:-BORDER, BORDER:-BORDER].max())
        masks.append(read_mask(s.mask_path, img.shape[:2]) if s.mask_path else np.zeros(img.shape[:2], bool))
    return {
        "image_auroc": round(auroc(np.array(labels), np.array(images)), 4),
        "pixel_auroc": round(pixel_auroc(np.stack(masks), np.stack(maps)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Folder for the dataset.")
    ap.add_argument("--categories", nargs="+", default=list(PHOTO_CATEGORIES), choices=list(PHOTO_CATEGORIES))
    ap.add_argument("--machine", default="2-core Intel Xeon, shared with other jobs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = args.work / "data"
    make_photo_dataset(data, args.categories, seed=0)
    pre = Preprocessing()
    results: dict[str, Any] = {"machine": args.machine, "machine_info": machine_info(), "threads": 1, "runs": {}}
    for category in args.categories:
        for split in SPLITS:
            folder = data / split / category
            row = {"local_stats_knn": local_stats_knn(folder)}
            row["random_backbone"] = probe(load_split(folder, pre), "isometric", pre.image_size, seed=0)
            results["runs"].setdefault(category, {})[split] = row
            stats, mix = row["local_stats_knn"], row["random_backbone"]["simplenet_features"]
            print(f"{category} {split}: local stats {stats['image_auroc']:.3f} / {stats['pixel_auroc']:.3f}, "
                  f"random backbone (SimpleNet's features) {mix['image_auroc']:.3f} / {mix['pixel_auroc']:.3f}",
                  flush=True)  # fmt: skip
            atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
