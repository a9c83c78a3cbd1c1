"""RealNet's AFS ablation (the paper's "all features vs AFS-selected"), measured once on CPU on the demo data.

Two models per category, trained with ``edge-ad demo --model realnet``'s recipe (pretrained EfficientNet-Lite0
block4 + block10, REALNET_CPU_DEMO at 128 px, the demo's held-out share, seed 0) and differing only in AFS:

- ``afs``: AFS keeps half of each level's channels (20 of 40, 56 of 112), chosen by their response to synthetic
  anomalies (the shipped default);
- ``all_channels``: every channel is kept (``afs_ratio`` 1), so G_k reconstructs all of them.

RRS keeps the same number of residual channels in both (13 by max, 13 by mean: the default for the selected 76), so
the selection before reconstruction is the only difference. Each is evaluated on the category's test split (torch,
image / pixel AUROC); training seconds, trained parameters and torch latency at batch 1 are recorded with the load
average, since the machine may be shared. Writes benchmarks/results/realnet_afs_cpu.json.

    OMP_NUM_THREADS=1 python -m edge_ad.benchmarks.realnet_afs --work /tmp/afs --categories brushed_metal
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("EDGE_AD_QUIET", "1")

import torch  # noqa: E402

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.cli.demo import DEMO_GOOD_IMAGES  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.datasets.demo import DEFAULT_DEMO_CATEGORY, make_demo_dataset  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.family import DEMO_HOLDOUT  # noqa: E402
from edge_ad.models.realnet.family import CPU_DEMO_EPOCHS  # noqa: E402
from edge_ad.models.realnet.model import RealNet, RealNetConfig  # noqa: E402
from edge_ad.models.realnet.trainer import (  # noqa: E402
    DEMO_IMAGE_SIZE,
    DEMO_RESIZE,
    REALNET_CPU_DEMO,
    train_realnet_bundle,
)

RESULT = Path(__file__).resolve().parent / "results" / "realnet_afs_cpu.json"


def ablation_configs(backbone: str = "efficientnet_lite0") -> dict[str, RealNetConfig]:
    """The two arms: AFS-selected (the default) and every channel, with RRS's size held at the default's."""
    selected = RealNetConfig(backbone=backbone)
    return {
        "afs": selected,
        "all_channels": RealNetConfig(backbone=backbone, afs_ratio=1.0, rrs_k=selected.rrs_k),
    }


def _latency_ms(model: RealNet, size: int, iters: int = 10) -> float:
    """Median torch latency of the inference graph at batch 1 (one thread)."""
    graph = model.eval().inference_graph()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        graph(x)
        for _ in range(iters):
            t0 = time.perf_counter()
            graph(x)
            times.append(time.perf_counter() - t0)
    return round(1000 * sorted(times)[len(times) // 2], 2)


def run_arm(data: Path, category: str, out: Path, cfg: RealNetConfig, epochs: int, seed: int) -> dict[str, Any]:
    """Train one arm with the demo recipe and evaluate it on the category's test split."""
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.models.registry import load_model

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    train_realnet_bundle(
        data, out, category=category, preprocessing=Preprocessing(image_size=DEMO_IMAGE_SIZE, resize=DEMO_RESIZE),
        model_cfg=cfg, train_cfg=dataclasses.replace(
            REALNET_CPU_DEMO, epochs=epochs, seed=seed, holdout_fraction=DEMO_HOLDOUT
        ),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    overall = evaluate_model(out, data, category, backend="torch")["metrics"]["overall"]
    model, _ = load_model(out)
    trained = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    return {
        "afs_keep": list(cfg.afs_keep),
        "rrs_k": cfg.rrs_k,
        "image_auroc": round(overall["image_auroc"], 4),
        "pixel_auroc": round(overall["pixel_auroc"], 4),
        "train_seconds": round(seconds, 1),
        "trained_parameters": trained,
        "torch_ms_per_image_batch1": _latency_ms(model, DEMO_IMAGE_SIZE),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Folder for the demo data and the bundles.")
    ap.add_argument("--categories", nargs="+", default=[DEFAULT_DEMO_CATEGORY])
    ap.add_argument("--epochs", type=int, default=CPU_DEMO_EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine", default="2-core AMD EPYC, shared with other jobs")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "machine": args.machine,
        "machine_info": machine_info(),
        "threads": 1,
        "recipe": f"edge-ad demo --model realnet: REALNET_CPU_DEMO, {args.epochs} epochs, {DEMO_IMAGE_SIZE} px, "
        f"pretrained efficientnet_lite0 block4 + block10, seed {args.seed}",
        "runs": {},
    }
    for category in args.categories:
        data = args.work / "data"
        make_demo_dataset(data, [category], seed=args.seed, n_train=DEMO_GOOD_IMAGES)
        for arm, cfg in ablation_configs().items():
            row = run_arm(data, category, args.work / "models" / arm / category, cfg, args.epochs, args.seed)
            print(f"{category} {arm}: {row['image_auroc']:.4f} / {row['pixel_auroc']:.4f} "
                  f"({row['train_seconds']:.0f} s, load {row['load_average_1min']})", flush=True)  # fmt: skip
            results["runs"].setdefault(category, {})[arm] = row
            atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
