"""NSA against SimpleNet's demo recipe, measured in one run on one machine: training seconds per epoch and
onnxruntime inference (fp32, INT8), reported as ratios, plus how far each family's fp16 and INT8 exports move its
outputs.

Why: the two families cost very differently (SimpleNet trains a discriminator on a frozen WideResNet50's cached
features; NSA trains a whole encoder-decoder from scratch on fresh synthetic anomalies), and absolute figures from
different runs of a shared CPU are not comparable; ratios from one run are. Both train on the same demo images with
their CPU demo recipes (SimpleNet: random backbone, :func:`edge_ad.cli.demo`'s recipe; NSA: ``NSA_CPU_DEMO``) for
a few epochs; the last epoch's seconds are taken (the first pays one-off costs; SimpleNet's feature cache is timed
apart as its set-up). Inference: each family's fp32 ONNX and its INT8 Q/DQ model (default recipe, percentile
calibration on 8 good images) through onnxruntime, one intra-op thread, batch 1 and 4. One torch thread. Writes
benchmarks/results/nsa_cpu.json naming the machine.

    python -m edge_ad.benchmarks.bench_nsa --train-images 16 --epochs 2 --iters 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("EDGE_AD_QUIET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edge_ad.bench.run import LatencyStats, machine_info, time_calls  # noqa: E402
from edge_ad.bundle import read_bundle  # noqa: E402
from edge_ad.calibration import quantize_int8  # noqa: E402
from edge_ad.cli.demo import demo_recipe  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.datasets.demo import make_demo_dataset  # noqa: E402
from edge_ad.export.onnx_export import export_onnx_checked  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.runtimes.onnx_runtime import OnnxRuntime  # noqa: E402

RESULT = Path(__file__).parent / "results" / "nsa_cpu.json"
FAMILIES = ("simplenet", "nsa")


def _train(family: str, data: Path, out: Path, epochs: int) -> dict[str, Any]:
    """Train with the family's demo recipe; wall time and the epochs' own seconds from the bundle's history."""
    t0 = time.perf_counter()
    demo_recipe(family).train(data.parent, out, category=data.name, epochs=epochs, seed=0, device="cpu", resume=False)
    wall = time.perf_counter() - t0
    history = read_bundle(out).training.get("history", [])
    seconds = [float(h["seconds"]) for h in history]
    return {
        "epochs": len(seconds),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "seconds_per_epoch": round(seconds[-1], 3),
        "wall_seconds": round(wall, 2),
        "setup_seconds": round(wall - sum(seconds), 2),  # data, feature cache (SimpleNet), threshold, saving
    }


def _deviation(path: Path, reference: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> dict[str, float]:
    """Change of image scores and maps against fp32 on ``x``, absolute and over the fp32 maps' range."""
    scores, maps = OnnxRuntime(path, threads=1).predict(x)
    span = max(float(np.ptp(reference[1])), 1e-12)
    d_score, d_map = np.abs(scores - reference[0]), np.abs(maps - reference[1])
    return {
        "score_max_abs": float(d_score.max()),
        "map_max_abs": float(d_map.max()),
        "map_mean_abs": float(d_map.mean()),
        "fp32_map_range": span,
        "score_max_per_map_range": float(d_score.max() / span),
        "map_mean_per_map_range": float(d_map.mean() / span),
    }


def _inference(bundle: Path, good: Path, x: np.ndarray, iters: int) -> dict[str, Any]:
    """fp32 and INT8 onnxruntime rows (images/s at batch 1 and 4) and the INT8 model's change against fp32."""
    fp32 = export_onnx_checked(bundle, precision="fp32").path
    int8 = quantize_int8(fp32, good, bundle / "model.int8.onnx", method="percentile", count=8)
    reference = OnnxRuntime(fp32, threads=1).predict(x)
    rows: dict[str, Any] = {}
    for precision, path in (("fp32", fp32), ("int8", int8)):
        runtime = OnnxRuntime(path, threads=1)
        for batch in (1, 4):
            chunk = x[:batch]
            stats = LatencyStats.from_times(time_calls(lambda c=chunk, rt=runtime: rt.predict(c), 1, iters), batch)
            rows[f"{precision}_batch{batch}_images_per_s"] = round(stats.images_per_s, 2)
    rows["int8_vs_fp32"] = _deviation(int8, reference, x)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-images", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = round(os.getloadavg()[0], 2)  # other jobs on the machine slow every row alike
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-ad-bench-nsa-") as tmp:
        root = Path(tmp)
        (data,) = make_demo_dataset(root / "data", ["washer"], seed=0, n_train=args.train_images, n_test_good=4,
                                    n_test_per_defect=2)
        good = data / "train" / "good"
        test = sorted((data / "test").glob("*/*.png"))[:4]
        for family in FAMILIES:
            bundle = root / family
            train = _train(family, data, bundle, args.epochs)
            pre = read_bundle(bundle).preprocessing
            x = pre.batch([read_image(p) for p in test])
            results[family] = {"training": train, "inference": _inference(bundle, good, x, args.iters)}
            fp16 = export_onnx_checked(bundle, precision="fp16")
            reference = OnnxRuntime(bundle / "model.fp32.onnx", threads=1).predict(x)
            results[family]["fp16_vs_fp32"] = _deviation(fp16.path, reference, x)
            print(json.dumps({family: results[family]}))
    nsa, simple = results["nsa"], results["simplenet"]
    ratios = {
        "train_seconds_per_epoch_nsa_over_simplenet": round(
            nsa["training"]["seconds_per_epoch"] / simple["training"]["seconds_per_epoch"], 3
        ),
        "train_wall_nsa_over_simplenet": round(nsa["training"]["wall_seconds"] / simple["training"]["wall_seconds"], 3),
    }
    for key in ("fp32_batch1_images_per_s", "fp32_batch4_images_per_s", "int8_batch1_images_per_s",
                "int8_batch4_images_per_s"):
        ratios[f"{key.removesuffix('_images_per_s')}_throughput_nsa_over_simplenet"] = round(
            nsa["inference"][key] / simple["inference"][key], 3
        )
    result = {
        "benchmark": "bench_nsa",
        "machine": machine_info(),
        "load_average_before": load_before,
        "settings": {**vars(args), "torch_threads": 1, "onnxruntime_threads": 1, "category": "washer"},
        "families": results,
        "ratios": ratios,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULT, result)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
