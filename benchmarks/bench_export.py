"""Export-stage figures on a trained bundle and its category's test split, in one run:

* parity: onnxruntime fp32 vs the torch graph (max abs diff of image scores and maps), fp16 vs fp32 (max
  relative error of maps, change of image and pixel AUROC);
* fusion: FLOPs per image of the fused graph (counted on the exported ONNX) vs the literal formulation
  (1536x1536 adapter + 1536x1024 discriminator layer on every position), and torch CPU latency of both.

    python -m edge_ad.benchmarks.bench_export MODEL_DIR CATEGORY_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench.run import machine_info, time_calls  # noqa: E402
from edge_ad.data.layout import test_samples  # noqa: E402
from edge_ad.evaluation.evaluate import metrics_by_defect, score_samples  # noqa: E402
from edge_ad.export.onnx_export import export_onnx, graph_flops  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.models.registry import load_model  # noqa: E402
from edge_ad.models.simplenet.reference_baseline import ReferenceBaseline  # noqa: E402
from edge_ad.runtimes.onnx_runtime import OnnxRuntime  # noqa: E402
from edge_ad.runtimes.torch_runtime import TorchRuntime  # noqa: E402


def literal_head_flops(grid: int, dim: int = 1536, hidden: int = 1024) -> float:
    """Adapter + discriminator on every position, as the paper formulates them (2 FLOPs per MAC)."""
    return 2.0 * grid * grid * (dim * dim + dim * hidden + hidden)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("category", type=Path)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()

    model, info = load_model(args.bundle)
    samples = test_samples(args.category)
    runs = {
        "torch_fp32": TorchRuntime(model),
        "onnx_fp32": OnnxRuntime(export_onnx(args.bundle, precision="fp32")),
        "onnx_fp16": OnnxRuntime(export_onnx(args.bundle, precision="fp16")),
    }
    scored = {name: score_samples(rt, samples, info.preprocessing) for name, rt in runs.items()}
    metrics = {name: metrics_by_defect(s)["overall"] for name, s in scored.items()}
    t, o, h = scored["torch_fp32"], scored["onnx_fp32"], scored["onnx_fp16"]
    span = float(o.maps.max() - o.maps.min())
    parity = {
        "onnx_fp32_vs_torch_max_abs_score": float(np.abs(o.image_scores - t.image_scores).max()),
        "onnx_fp32_vs_torch_max_abs_map": float(np.abs(o.maps - t.maps).max()),
        "fp16_vs_fp32_max_rel_map_error": float(np.abs(h.maps - o.maps).max() / max(np.abs(o.maps).max(), 1e-12)),
        "fp16_vs_fp32_max_abs_map_error_over_range": float(np.abs(h.maps - o.maps).max() / span),
        "fp16_image_auroc_change": metrics["onnx_fp16"]["image_auroc"] - metrics["onnx_fp32"]["image_auroc"],
        "fp16_pixel_auroc_change": metrics["onnx_fp16"]["pixel_auroc"] - metrics["onnx_fp32"]["pixel_auroc"],
    }

    flops = graph_flops(args.bundle / "model.fp32.onnx")
    grid = model.grid_size
    literal = flops["backbone"] + literal_head_flops(grid) + flops.get("postprocess", 0.0)
    x = info.preprocessing.batch([np.zeros((256, 256, 3), np.uint8)])
    graph = model.inference_graph()
    baseline = ReferenceBaseline(model)

    def median_time(fn) -> float:
        return statistics.median(time_calls(fn, warmup=1, iters=args.iters))

    with torch.no_grad():
        fused_s = median_time(lambda: graph(torch.from_numpy(x)))
        literal_s = median_time(lambda: baseline.patch_scores(torch.from_numpy(x)))
    result = {
        "benchmark": "export",
        "bundle": str(args.bundle),
        "test_images": len(samples),
        "metrics": metrics,
        "parity": parity,
        "flops_per_image": {
            "fused_graph": flops,
            "literal_total": literal,
            "fused_over_literal": flops["total"] / literal,
        },
        "torch_cpu_batch1": {"fused_graph_s": fused_s, "literal_network_s": literal_s, "speedup": literal_s / fused_s},
        "machine": machine_info(),
        "note": "one run; CPU timings are ratios on a shared 2-core build machine, not absolute claims",
    }
    atomic_write_json(Path(__file__).parent / "results" / "export_cpu.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
