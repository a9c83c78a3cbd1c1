"""Speed of the NSA anomaly generator on 224x224 images: images per second, in this process and with workers.

Why: NSA draws a fresh synthetic anomaly for every training image of every epoch, so the generator must keep up with
the trainer. Each demo category is timed per label mode in one process (OpenCV's own threads as they are), then
``synthetic_set`` with worker processes, whose steady rate is taken from two set sizes (so the workers' start-up is
reported apart). Torch-free. Writes benchmarks/results/synthesis_cpu.json.

    python -m edge_ad.benchmarks.bench_synthesis --examples 60 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("EDGE_AD_QUIET", "1")

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.datasets.demo import DEMO_CATEGORIES, render_demo_sample  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.synthesis import NsaGenerator, params_for, synthetic_set  # noqa: E402


def _rate(gen: NsaGenerator, n: int, seed: int, workers: int = 0) -> tuple[float, float]:
    t0 = time.perf_counter()
    examples = synthetic_set(gen, n, seed, workers=workers)
    dt = time.perf_counter() - t0
    assert len(examples) == n
    return dt, n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24, help="good images per category")
    ap.add_argument("--examples", type=int, default=60, help="examples timed per category and label mode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    load_before = round(os.getloadavg()[0], 2)  # other jobs on the machine slow every row alike
    rows = []
    gens = {}
    for cat in DEMO_CATEGORIES:
        images = [render_demo_sample(cat, split="train", index=i, image_size=args.size)[0] for i in range(args.images)]
        for label in ("binary", "logistic"):
            gen = NsaGenerator(images, params_for(cat), label)
            gens[(cat, label)] = gen
            synthetic_set(gen, 5, seed=99)  # warm-up (untimed)
            seconds, rate = _rate(gen, args.examples, seed=0)
            patches = sum(len(e.patches) for e in synthetic_set(gen, 20, seed=1)) / 20
            rows.append(
                {
                    "category": cat,
                    "kind": gen.params.kind,
                    "clone": gen.params.clone,
                    "label": label,
                    "examples": args.examples,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(rate, 1),
                    "mean_patches": round(patches, 2),
                }
            )
            print(json.dumps(rows[-1]))

    # worker processes: steady rate from two set sizes (the difference cancels the pool's start-up)
    gen = gens[("washer", "logistic")]
    small, large = 2 * args.workers, 2 * args.workers + 4 * args.examples
    t_small, _ = _rate(gen, small, seed=0, workers=args.workers)
    t_large, _ = _rate(gen, large, seed=0, workers=args.workers)
    _, inline = _rate(gen, args.examples, seed=0)
    steady = (large - small) / (t_large - t_small)
    workers = {
        "category": "washer",
        "label": "logistic",
        "workers": args.workers,
        "startup_seconds": round(t_small - small / steady, 2),
        "steady_images_per_s": round(steady, 1),
        "in_process_images_per_s": round(inline, 1),
        "speedup": round(steady / inline, 2),
    }
    print(json.dumps(workers))
    result = {
        "benchmark": "synthesis",
        "machine": machine_info(),
        "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "image_size": args.size,
        "images_per_category": args.images,
        "rows": rows,
        "worker_processes": workers,
        "note": "one run; other processes may share the CPU; rates are for generation only (no decode, no training)",
    }
    out = Path(__file__).parent / "results" / "synthesis_cpu.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
