"""How much a random backbone's features say about defects, per layer and per random draw, with no training.

A training-free Mahalanobis detector (one Gaussian over all good patch features, shrunk by 1% of the mean
variance) is fitted on each layer of the random trunk (BatchNorm re-estimated on the good images) and on
SimpleNet's layer2+layer3 feature mix, and scored on the demo test split: image AUROC (max of the patch map)
and pixel AUROC (bilinear resize, Gaussian sigma 4). It isolates the features from SimpleNet's training and is
how the isometric draw was chosen (README "Random backbones"). Writes
benchmarks/results/random_backbone_probe.json.

    python -m edge_ad.benchmarks.probe_random_backbone --categories brushed_metal washer woven_fabric
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.data.layout import test_samples, train_images  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.datasets.demo import make_demo_dataset  # noqa: E402
from edge_ad.evaluation.evaluate import sample_mask  # noqa: E402
from edge_ad.evaluation.metrics import auroc, pixel_auroc  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.backbones.wide_resnet import RANDOM_INITS, init_random_trunk, recalibrate_batchnorm  # noqa: E402
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig  # noqa: E402
from edge_ad.postprocess.numpy_ops import postprocess  # noqa: E402


def mahalanobis(train: torch.Tensor, test: torch.Tensor, shrink: float = 0.01) -> np.ndarray:
    """[N,C,h,w] good features, [M,C,h,w] test features -> [M,h,w] distances."""
    c = train.shape[1]
    x = train.permute(0, 2, 3, 1).reshape(-1, c).double()
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / len(x)
    cov += shrink * torch.trace(cov) / c * torch.eye(c, dtype=cov.dtype)
    q = test.permute(0, 2, 3, 1).reshape(-1, c).double() - mu
    d = ((q @ torch.linalg.inv(cov)) * q).sum(1).sqrt()
    return d.reshape(test.shape[0], *test.shape[2:]).float().numpy()


def on_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """3x3 local average (as SimpleNet's patchify does) then bilinear resize to the layer2 grid."""
    return F.interpolate(F.avg_pool2d(x, 3, 1, 1), size=(grid, grid), mode="bilinear", align_corners=False)


@dataclass
class Split:
    """One category's images, read and preprocessed once and shared by every draw."""

    train: torch.Tensor
    test: torch.Tensor
    labels: np.ndarray
    masks: np.ndarray


def load_split(category_dir: Path, pre: Preprocessing) -> Split:
    train = torch.from_numpy(pre.batch([read_image(p) for p in train_images(category_dir)]))
    samples = test_samples(category_dir)
    images = [read_image(s.path) for s in samples]
    return Split(
        train=train,
        test=torch.from_numpy(pre.batch(images)),
        labels=np.array([s.label for s in samples]),
        masks=np.stack([sample_mask(s, img, pre) for s, img in zip(samples, images, strict=True)]),
    )


@torch.no_grad()
def probe(split: Split, draw: str, image_size: int, seed: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(seed)
    model = SimpleNet(SimpleNetConfig(), image_size=image_size)
    trunk = model.backbone
    init_random_trunk(trunk, draw)
    recalibrate_batchnorm(trunk, (split.train[i : i + 8] for i in range(0, len(split.train), 8)))
    model.eval()
    grid = model.grid_size

    def layers(x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
        l1 = trunk.layer1(stem)
        l2 = trunk.layer2(l1)
        l3 = trunk.layer3(l2)
        out = {k: on_grid(v, grid) for k, v in (("stem", stem), ("layer1", l1), ("layer2", l2), ("layer3", l3))}
        out["simplenet_features"] = model.aggregator([l2, l3])  # what model.features(x) returns
        return out

    fit, score = layers(split.train), layers(split.test)
    result = {}
    for name in fit:
        patch = mahalanobis(fit[name], score[name])
        image_scores, maps = postprocess(patch, (image_size, image_size))
        result[name] = {
            "image_auroc": round(auroc(split.labels, image_scores), 4),
            "pixel_auroc": round(pixel_auroc(split.masks, maps), 4),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--categories", nargs="+", default=["brushed_metal"])
    ap.add_argument("--draws", nargs="+", default=list(RANDOM_INITS), choices=RANDOM_INITS)
    ap.add_argument("--data", type=Path, default=Path("/tmp/edge-ad-probe-data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "random_backbone_probe.json")
    args = ap.parse_args()
    make_demo_dataset(args.data, args.categories, seed=0)
    pre = Preprocessing()
    report: dict = {"machine": machine_info(), "detector": "mahalanobis, shrink 0.01, training-free", "results": {}}
    for category in args.categories:
        split = load_split(args.data / category, pre)
        for draw in args.draws:
            res = probe(split, draw, pre.image_size, args.seed)
            report["results"].setdefault(category, {})[draw] = res
            for layer, m in res.items():
                scores = f"image {m['image_auroc']:.3f}  pixel {m['pixel_auroc']:.3f}"
                print(f"{category:14s} {draw:12s} {layer:18s} {scores}")
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
