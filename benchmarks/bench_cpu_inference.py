"""CPU inference speed of the fused SimpleNet graph vs the literal (unfused) formulation, batch 1 and 8.

The literal arm is the paper's formulation as the authors run it: unfold of layer2/layer3, resize of the
unfolded layer3, two adaptive poolings, 1536x1536 adapter, discriminator, scipy-style smoothing per map.
Both arms run in the same process; speeds are reported as images/s on this CPU and as a ratio.

    python benchmarks/bench_cpu_inference.py --iters 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_ad.io import atomic_write_json
from edge_ad.models.simplenet import SimpleNet, SimpleNetConfig
from edge_ad.postprocess.numpy_ops import postprocess


def literal_scores(model: SimpleNet, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The unfused path: materialised unfold (C*9 per position) and the per-position MLPs."""
    with torch.no_grad():
        l2, l3 = model.backbone(x)
        n = x.shape[0]
        grid = l2.shape[-2:]
        per_layer = []
        for t in (l2, l3):
            c, h, w = t.shape[1:]
            p = F.unfold(t, 3, padding=1)
            if (h, w) != grid:
                p = F.interpolate(p.reshape(n, c * 9, h, w), size=grid, mode="bilinear", align_corners=False)
                p = p.reshape(n, c * 9, -1)
            per_layer.append(F.adaptive_avg_pool1d(p.permute(0, 2, 1).reshape(-1, 1, c * 9), 1536).squeeze(1))
        f = F.adaptive_avg_pool1d(torch.stack(per_layer, 1).reshape(-1, 1, 3072), 1536).squeeze(1)
        s = -model.discriminate(f).reshape(n, *grid)
    return postprocess(s.numpy(), (x.shape[-2], x.shape[-1]))


def timeit(fn, iters: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = SimpleNet(SimpleNetConfig(), image_size=args.image_size).eval()
    graph = model.inference_graph()
    rows = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, args.image_size, args.image_size)

        def fused(x=x):
            with torch.no_grad():
                graph(x)

        t_fused = timeit(fused, args.iters)
        t_literal = timeit(lambda x=x: literal_scores(model, x), args.iters)
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
        "cpu": platform.processor() or platform.machine(),
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
