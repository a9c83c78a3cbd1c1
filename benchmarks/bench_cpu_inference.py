"""CPU inference speed of the fused SimpleNet graph vs the literal (unfused) formulation, batch 1 and 8.

The literal arm is :class:`ReferenceBaseline` (the authors' formulation: unfold, adaptive pooling, 1536x1536
adapter, discriminator, scipy smoothing per map on the CPU).
Both arms run in the same process; speeds are reported as images/s on this CPU and as a ratio.

    python -m edge_ad.benchmarks.bench_cpu_inference --iters 5
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from edge_ad.bench.run import machine_info, time_calls
from edge_ad.io import atomic_write_json
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.reference_baseline import ReferenceBaseline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = SimpleNet(SimpleNetConfig(), image_size=args.image_size).eval()
    graph = model.inference_graph()
    baseline = ReferenceBaseline(model)
    rows = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, args.image_size, args.image_size)

        def fused(x=x):
            with torch.no_grad():
                graph(x)

        t_fused = time_calls(fused, 1, args.iters)
        t_literal = time_calls(lambda x=x: baseline.predict(x.numpy()), 1, args.iters)
        rows.append(
            {
                "batch": batch,
                "fused_images_per_s": round(batch / statistics.median(t_fused), 2),
                "literal_images_per_s": round(batch / statistics.median(t_literal), 2),
                "fused_speedup": round(statistics.median(t_literal) / statistics.median(t_fused), 3),
            }
        )
    result = {
        "benchmark": "cpu_inference_torch_fp32",
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image_size": args.image_size,
        "iters": args.iters,
        "rows": rows,
        "note": "CPU figures from a 2-core build machine; median of iters after one warm-up; same run for both arms",
    }
    atomic_write_json(Path(__file__).parent / "results" / "cpu_inference.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
