"""SimpleNet-on-Lite recipe sweep on the real photographs, on cached features (issue 19, part 4).

The frozen backbone's features of every crop are computed once per feature setting (input size, centre crop,
levels, aggregation size) and cached under ``--work``; SimpleNet's adapter and discriminator are then trained on
them with the paper's loop (the same steps as :class:`edge_ad.models.simplenet.trainer.Trainer`, with the recipe
knobs measured here: epochs, learning rates, noise sigma isotropic or per channel, truncation th, identity adapter),
and scored through the shared post-processing head (sigma 4). A training-free patch-memory score (distance to the
nearest training patch, optionally a random coreset of the memory) on the same features is the comparison row.

Settings are chosen on the **tune** split only; both splits are written to
``benchmarks/results/real_photos_lite_sweep.json`` under ``runs[name][category]``.

    OMP_NUM_THREADS=1 python -m edge_ad.benchmarks.real_photos_lite_sweep --work /tmp/photos --name base
    ... --name b4_memory --set 'layers=["block4"]' head=memory --categories grass gravel
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("EDGE_AD_QUIET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.data.layout import test_samples, train_images  # noqa: E402
from edge_ad.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing  # noqa: E402
from edge_ad.datasets.photos import PHOTO_CATEGORIES, SPLITS, make_photo_dataset  # noqa: E402
from edge_ad.evaluation.evaluate import sample_mask  # noqa: E402
from edge_ad.evaluation.metrics import auroc, image_and_pixel_metrics  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.backbones import get_backbone  # noqa: E402
from edge_ad.models.backbones.choice import BackboneSpec, setup_backbone  # noqa: E402
from edge_ad.models.simplenet.feature_cache import extract_features  # noqa: E402
from edge_ad.models.simplenet.model import Discriminator, SimpleNet, SimpleNetConfig  # noqa: E402
from edge_ad.models.simplenet.trainer import truncated_l1  # noqa: E402
from edge_ad.postprocess.torch_ops import AnomalyMapHead  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "real_photos_lite_sweep.json"

FEATURE_DEFAULTS: dict[str, Any] = {
    "backbone": "efficientnet_lite0", "layers": [], "image_size": 224, "resize": 256, "patch_size": 3,
    "normalize": "backbone",  # the backbone's own mean/std, or "imagenet"
}
HEAD_DEFAULTS: dict[str, Any] = {
    "head": "simplenet", "epochs": 30, "batch_size": 8, "adapter_lr": 1e-4, "disc_lr": 2e-4, "margin": 0.5,
    "noise_std": 0.3, "noise": "iso", "adapter": "learned", "seed": 0, "coreset": 1.0, "topk": 0.01,
}


def _key(f: dict[str, Any]) -> str:
    layers = "+".join(f["layers"]) or "default"
    norm = "" if f["normalize"] == "backbone" else f"-{f['normalize']}"
    return f"{f['backbone']}-{layers}-s{f['image_size']}-r{f['resize']}-p{f['patch_size']}{norm}"


def cached_features(work: Path, data: Path, category: str, f: dict[str, Any]) -> dict[str, Any]:
    """Train features [N, hw, D] and each split's test features, labels, masks and defect names (cached on disk)."""
    path = work / "features" / f"{_key(f)}-{category}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    cfg = SimpleNetConfig(backbone=f["backbone"], layers=tuple(f["layers"]), patch_size=f["patch_size"])
    model = SimpleNet(cfg, image_size=f["image_size"])
    setup_backbone(model, BackboneSpec())
    bb = get_backbone(f["backbone"])
    mean, std = (bb.mean, bb.std) if f["normalize"] == "backbone" else (IMAGENET_MEAN, IMAGENET_STD)
    pre = Preprocessing(image_size=f["image_size"], resize=f["resize"], mean=mean, std=std)

    def feats(paths: list[Path]) -> Tensor:
        imgs = [pre.batch([read_image(p)])[0] for p in paths]
        return extract_features(model, imgs, dtype=torch.float32)

    out: dict[str, Any] = {"train": feats(train_images(data / "tune" / category))}
    with torch.no_grad():
        x = torch.zeros(1, 3, f["image_size"], f["image_size"])
        out["grid"] = tuple(model.features(x).shape[-2:])
    for split in SPLITS:
        samples = test_samples(data / split / category)
        images = [read_image(s.path) for s in samples]
        out[split] = {
            "feats": feats([s.path for s in samples]),
            "labels": np.array([s.label for s in samples]),
            "defects": [s.defect for s in samples],
            "masks": np.stack([sample_mask(s, im, pre) for s, im in zip(samples, images, strict=True)]),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def feature_noise(true: Tensor, mode: str, sigma: float, input_std: Tensor, gen: torch.Generator) -> Tensor:
    """The anomaly features' noise: ``iso`` N(0, sigma^2) (the paper), ``channel`` sigma times each channel's std in
    this batch of adapted features, ``channel_input`` sigma times each input channel's std over the training set."""
    noise = torch.randn(true.shape, generator=gen) * sigma
    if mode == "channel":
        return noise * true.std(0, keepdim=True)
    if mode == "channel_input":
        return noise * input_std
    if mode != "iso":
        raise ValueError(f"noise must be iso, channel or channel_input, got {mode!r}")
    return noise


def parse_settings(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` overrides into (feature settings, head settings); values in JSON where they look like it."""
    f, h = dict(FEATURE_DEFAULTS), dict(HEAD_DEFAULTS)
    for item in items:
        k, v = item.split("=", 1)
        target = f if k in f else h
        if k not in target:
            raise ValueError(f"unknown setting {k!r}; known: {sorted(f) + sorted(h)}")
        target[k] = json.loads(v) if v[:1] in "[{0123456789-." or v in ("null", "true", "false") else v
    return f, h


def train_head(train: Tensor, h: dict[str, Any]) -> tuple[tuple[nn.Module, nn.Module], dict[str, float]]:
    """The paper's loop (as Trainer.train_epoch) on cached features, with the sweep's knobs."""
    torch.manual_seed(h["seed"])
    dim = train.shape[-1]
    adapter = nn.Linear(dim, dim)
    nn.init.xavier_normal_(adapter.weight)
    if h["adapter"] == "identity":
        adapter = nn.Identity()
    disc = Discriminator(dim, 1024, 0.2)
    opt_d = torch.optim.Adam(disc.parameters(), lr=h["disc_lr"], weight_decay=1e-5)
    opt_a = (
        torch.optim.AdamW(adapter.parameters(), lr=h["adapter_lr"], weight_decay=0.01)
        if h["adapter"] != "identity" else None
    )
    gen = torch.Generator().manual_seed(h["seed"])
    chan_std = train.flatten(0, 1).std(0)  # input features' per-channel spread
    stats: dict[str, float] = {}
    for _epoch in range(h["epochs"]):
        adapter.train()
        disc.train()
        order = torch.randperm(train.shape[0], generator=gen)
        for start in range(0, len(order), h["batch_size"]):
            feats = train[order[start : start + h["batch_size"]]].flatten(0, 1)
            true = adapter(feats)
            fake = true + feature_noise(true.detach(), h["noise"], h["noise_std"], chan_std, gen)
            scores = disc(torch.cat([true, fake]))
            s_true, s_fake = scores[: len(true)], scores[len(true) :]
            loss = truncated_l1(s_true, s_fake, h["margin"])
            opt_d.zero_grad(set_to_none=True)
            if opt_a:
                opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            if opt_a:
                opt_a.step()
            stats = {
                "loss": float(loss.detach()), "p_true": float((s_true >= h["margin"]).float().mean()),
                "p_fake": float((s_fake < -h["margin"]).float().mean()),
            }
    adapter.eval()
    disc.eval()
    return (adapter, disc), stats


@torch.no_grad()
def patch_scores_simplenet(head: Any, feats: Tensor) -> Tensor:
    adapter, disc = head
    n, hw, d = feats.shape
    return -disc(adapter(feats.reshape(-1, d))).reshape(n, hw)


@torch.no_grad()
def patch_scores_memory(train: Tensor, feats: Tensor, coreset: float, seed: int) -> Tensor:
    """Distance of each test patch to its nearest training patch (a random ``coreset`` share of the memory)."""
    memory = train.flatten(0, 1)
    if coreset < 1.0:
        g = torch.Generator().manual_seed(seed)
        memory = memory[torch.randperm(len(memory), generator=g)[: int(len(memory) * coreset)]]
    out = []
    for img in feats:
        out.append(torch.cdist(img, memory).min(dim=1).values)
    return torch.stack(out)


@torch.no_grad()
def patch_scores_gaussian(train: Tensor, feats: Tensor) -> Tensor:
    """Mahalanobis distance to one Gaussian of all training patches (a texture is stationary: one for every place)."""
    flat = train.flatten(0, 1).double()
    mean = flat.mean(0)
    cov = torch.cov((flat - mean).T) + 0.01 * torch.eye(flat.shape[1], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    d = feats.double() - mean
    return torch.einsum("nkd,de,nke->nk", d, prec, d).clamp(min=0).sqrt().float()


def evaluate(patch: Tensor, grid: tuple[int, int], split: dict[str, Any], size: int, topk: float) -> dict[str, Any]:
    head = AnomalyMapHead((size, size), sigma=4.0)
    score_max, maps_t = head(patch.reshape(-1, 1, *grid).float())
    maps = maps_t.numpy()
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(flat.shape[1] * topk))
    score_topk = np.sort(flat, axis=1)[:, -k:].mean(axis=1)
    labels, masks = split["labels"], split["masks"]
    m = image_and_pixel_metrics(labels, score_max.numpy(), masks, maps)
    per: dict[str, float] = {}
    good = np.array([d == "good" for d in split["defects"]])
    for defect in sorted(set(split["defects"]) - {"good"}):
        sel = good | np.array([d == defect for d in split["defects"]])
        per[defect] = round(auroc(labels[sel], score_max.numpy()[sel]), 4)
    return {
        "image_auroc": round(m["image_auroc"], 4), "pixel_auroc": round(m["pixel_auroc"], 4),
        "aupro": round(m.get("aupro", float("nan")), 4),
        "image_auroc_topk": round(auroc(labels, score_topk), 4), "per_defect_image": per,
    }


def run(work: Path, data: Path, category: str, f: dict[str, Any], h: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    c = cached_features(work, data, category, f)
    t1 = time.perf_counter()
    row: dict[str, Any] = {"features_seconds": round(t1 - t0, 1), "grid": list(c["grid"])}
    if h["head"] == "simplenet":
        head, stats = train_head(c["train"], h)
        row["train_stats"] = {k: round(v, 4) for k, v in stats.items()}
        row["train_seconds"] = round(time.perf_counter() - t1, 1)
        score = lambda x: patch_scores_simplenet(head, x)  # noqa: E731
    elif h["head"] == "gaussian":
        score = lambda x: patch_scores_gaussian(c["train"], x)  # noqa: E731
    else:
        score = lambda x: patch_scores_memory(c["train"], x, h["coreset"], h["seed"])  # noqa: E731
    for split in SPLITS:
        row[split] = evaluate(score(c[split]["feats"]), c["grid"], c[split], f["image_size"], h["topk"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", required=True, help="Row name in the results.")
    ap.add_argument("--categories", nargs="+", default=list(PHOTO_CATEGORIES))
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides (feature or head settings)")
    ap.add_argument("--machine", default="2-core AMD EPYC, shared with other jobs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    try:
        f, h = parse_settings(args.set)
    except ValueError as e:
        ap.error(str(e))
    torch.set_num_threads(1)
    data = args.work / "data"
    make_photo_dataset(data, list(PHOTO_CATEGORIES), seed=0)
    for category in args.categories:
        row = run(args.work, data, category, f, h)
        row.update(features=f, head=h, load=os.getloadavg()[0])
        t, r = row["tune"], row["report"]
        print(f"{args.name} {category}: tune {t['image_auroc']:.3f} / {t['pixel_auroc']:.3f} "
              f"(topk {t['image_auroc_topk']:.3f}) report {r['image_auroc']:.3f} / {r['pixel_auroc']:.3f} "
              f"(topk {r['image_auroc_topk']:.3f}) {t['per_defect_image']}", flush=True)
        with open(args.work / "results.lock", "w") as lock:  # several sweeps may share the machine
            fcntl.flock(lock, fcntl.LOCK_EX)
            results = json.loads(args.out.read_text()) if args.out.is_file() else {}
            results.update(machine=args.machine, machine_info=machine_info(), threads=1)
            results.setdefault("runs", {}).setdefault(args.name, {})[category] = row
            atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
