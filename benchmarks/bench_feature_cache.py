"""Training with the frozen-feature cache vs recomputing backbone features every epoch (the authors' way).

Both arms run the same number of epochs of the same adapter+discriminator steps on the same images, in one
process on one machine; the result is reported as a ratio. Writes benchmarks/results/feature_cache_<host>.json.

    python -m edge_ad.benchmarks.bench_feature_cache --images 16 --epochs 3 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.data.layout import train_images  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.datasets.demo import make_demo_dataset  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.simplenet.feature_cache import extract_features  # noqa: E402
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig  # noqa: E402
from edge_ad.models.simplenet.trainer import TrainConfig, Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--data", type=Path, default=Path("/tmp/edge-ad-bench-data"))
    args = ap.parse_args()

    (folder,) = make_demo_dataset(args.data, ["brushed_metal"], n_train=args.images, n_test_good=1, n_test_per_defect=1)
    pp = Preprocessing(image_size=args.image_size, resize=None)
    images = [pp(read_image(p)) for p in train_images(folder)]
    cfg = TrainConfig(epochs=args.epochs, batch_size=8)

    def model() -> SimpleNet:
        torch.manual_seed(0)
        return SimpleNet(SimpleNetConfig(noise_std=0.1), image_size=args.image_size)

    # warm-up (untimed): first calls pay for allocations and kernel selection, which would bias arm 1
    m = model()
    Trainer(m, extract_features(m, images[: cfg.batch_size]), TrainConfig(epochs=1, batch_size=8)).fit()

    # arm 1: cache once, then train
    t0 = time.perf_counter()
    m = model()
    feats = extract_features(m, images)
    t_extract = time.perf_counter() - t0
    Trainer(m, feats, cfg).fit()
    t_cached = time.perf_counter() - t0

    # arm 2: recompute the (frozen) features in every epoch, as the authors' code does
    t0 = time.perf_counter()
    m = model()
    trainer = Trainer(m, torch.empty(0), cfg)
    for epoch in range(cfg.epochs):
        trainer.features = extract_features(m, images)  # same work the authors repeat per epoch
        trainer.train_epoch(epoch)
    t_recompute = time.perf_counter() - t0

    result = {
        "benchmark": "feature_cache",
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "images": args.images,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "extract_seconds": round(t_extract, 2),
        "cached_seconds": round(t_cached, 2),
        "recompute_seconds": round(t_recompute, 2),
        "speedup": round(t_recompute / t_cached, 3),
        # per epoch: the cached arm's epochs after its one extraction vs the recomputing arm's epochs
        "cached_epoch_seconds": round((t_cached - t_extract) / args.epochs, 2),
        "recompute_epoch_seconds": round(t_recompute / args.epochs, 2),
        "per_epoch_speedup": round(t_recompute / (t_cached - t_extract), 3),
        "note": "ratio measured in one run; CPU only, no absolute speeds are claimed",
    }
    out = Path(__file__).parent / "results" / "feature_cache_cpu.json"
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
