"""Training-free reference points on the real photographs: how much a defect says to simple local features.

Why: when a family scores badly on :mod:`edge_ad.datasets.photos`, this tells the reader whether the features it starts
from carry the defect at all (the random WideResNet that SimpleNet's no-download path uses) and what a plain
classical detector reaches (local grey-level statistics). Three detectors, fitted on each category's good training
crops and scored on the tune and report splits:

* ``local_stats_knn``: per pixel of the 128-pixel crop, local mean, standard deviation and gradient energy at
  three Gaussian scales (sigma 1.5, 3, 6; nine values, standardised on the good crops); the score is the mean
  distance to the 3 nearest of 60,000 good-crop pixels, smoothed (sigma 2). Image score: the map's maximum
  eight pixels in from the border (the filters' padding).
* ``raw_patch_knn``: the plain patch-matching detector: 9 x 9 grey-level patches of the crop shrunk to a quarter
  (each patch sees 36 x 36 pixels of the photograph), standardised per value on the good crops, scored like
  ``local_stats_knn`` (distance to the nearest good patch; map resized back, smoothed, maximum inside the
  border). Its patch size and scale were picked on the tune split among 7 x 7 / 9 x 9 at full, half and
  quarter size.
* ``random_backbone``: the training-free Mahalanobis probe of :mod:`edge_ad.benchmarks.probe_random_backbone` on the
  random (isometric) WideResNet's layers and SimpleNet's feature mix, with the default preprocessing.

    python -m edge_ad.benchmarks.real_photos_baselines --work /tmp/photos
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.benchmarks.probe_random_backbone import load_split, probe  # noqa: E402
from edge_ad.data.images import read_image, read_mask  # noqa: E402
from edge_ad.data.layout import test_samples, train_images  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.datasets.photos import PHOTO_CATEGORIES, SPLITS, make_photo_dataset  # noqa: E402
from edge_ad.evaluation.metrics import auroc, pixel_auroc  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402

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


def raw_patches(rgb: np.ndarray, size: int = 9, shrink: int = 4) -> np.ndarray:
    """[H / shrink, W / shrink, size * size]: every ``size`` x ``size`` grey patch of the shrunk crop.

    Edges are reflected, so a patch at the border is made of the crop's own pixels."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    g = cv2.resize(g, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA)
    r = size // 2
    padded = cv2.copyMakeBorder(g, r, r, r, r, cv2.BORDER_REFLECT)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    return np.ascontiguousarray(windows.reshape(*g.shape, size * size))


def _knn_distance(bank: torch.Tensor, queries: torch.Tensor, k: int = 3) -> torch.Tensor:
    bank_sq = (bank * bank).sum(1)
    out = []
    for chunk in queries.split(4096):
        d = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ bank.T + bank_sq
        out.append(d.clamp_min(0).topk(k, largest=False).values.mean(1).sqrt())
    return torch.cat(out)


def knn_detector(
    category_dir: Path, features: Callable[[np.ndarray], np.ndarray], k: int, seed: int = 0
) -> dict[str, float]:
    """Fit ``features`` (an [h, w, C] map of an RGB crop) on the good training crops, score the test split by the
    mean distance to the ``k`` nearest of ``BANK`` good values: image and pixel AUROC."""
    fitted = [features(read_image(p)) for p in train_images(category_dir)]
    dims = fitted[0].shape[-1]
    train = np.concatenate([f.reshape(-1, dims) for f in fitted])
    mu, sd = train.mean(0), train.std(0) + 1e-6
    pick = np.random.default_rng(seed).choice(len(train), min(BANK, len(train)), replace=False)
    bank = torch.from_numpy(((train[pick] - mu) / sd).astype(np.float32))
    labels, images, maps, masks = [], [], [], []
    for s in test_samples(category_dir):
        img = read_image(s.path)
        f = features(img)
        q = torch.from_numpy(((f.reshape(-1, dims) - mu) / sd).astype(np.float32))
        m = _knn_distance(bank, q, k).numpy().reshape(f.shape[:2])
        m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        m = cv2.GaussianBlur(m, (0, 0), 2.0)
        labels.append(s.label)
        maps.append(m)
        images.append(m[BORDER:-BORDER, BORDER:-BORDER].max())
        masks.append(read_mask(s.mask_path, img.shape[:2]) if s.mask_path else np.zeros(img.shape[:2], bool))
    return {
        "image_auroc": round(auroc(np.array(labels), np.array(images)), 4),
        "pixel_auroc": round(pixel_auroc(np.stack(masks), np.stack(maps)), 4),
    }


def local_stats_knn(category_dir: Path, seed: int = 0) -> dict[str, float]:
    """Local grey-level statistics, 3 nearest neighbours."""
    return knn_detector(category_dir, local_stats, 3, seed)


def raw_patch_knn(category_dir: Path, seed: int = 0) -> dict[str, float]:
    """Raw grey patches at a quarter of the size, the nearest neighbour."""
    return knn_detector(category_dir, raw_patches, 1, seed)


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
            row = {"local_stats_knn": local_stats_knn(folder), "raw_patch_knn": raw_patch_knn(folder)}
            row["random_backbone"] = probe(load_split(folder, pre), "isometric", pre.image_size, seed=0)
            results["runs"].setdefault(category, {})[split] = row
            stats, raw = row["local_stats_knn"], row["raw_patch_knn"]
            mix = row["random_backbone"]["simplenet_features"]
            print(f"{category} {split}: local stats {stats['image_auroc']:.3f} / {stats['pixel_auroc']:.3f}, "
                  f"raw patches {raw['image_auroc']:.3f} / {raw['pixel_auroc']:.3f}, "
                  f"random backbone (SimpleNet's features) {mix['image_auroc']:.3f} / {mix['pixel_auroc']:.3f}",
                  flush=True)  # fmt: skip
            atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
