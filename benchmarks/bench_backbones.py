"""SimpleNet on each backbone, timed in one run on the same images: ``edge-ad bench``'s rows for every bundle given
(e.g. the pretrained EfficientNet-Lite0 demo and the random-WideResNet50 one; speed does not depend on the weights)
and the speed ratio of each to the first bundle, row by row. On a shared machine absolute times move with the load,
so read the ratios: both bundles' rows are measured interleaved, batch by batch, in one process.

    OMP_NUM_THREADS=2 python -m edge_ad.benchmarks.bench_backbones --bundles W/lite0 W/wrn50 --data DATA/brushed_metal
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_ad.bench.run import machine_info, run_bench
from edge_ad.bundle import read_bundle
from edge_ad.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "bench_backbones_cpu.json"


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["backend"], row["precision"], int(row["batch"])


def bench_bundles(
    bundles: list[Path], *, precisions: list[str], batches: list[int], data: Path | None, iters: int, rounds: int
) -> dict[str, Any]:
    """Rows per bundle (best img/s of ``rounds`` interleaved runs) and each bundle's img/s over the first's."""
    best: dict[str, dict[tuple[str, str, int], dict[str, Any]]] = {str(b): {} for b in bundles}
    for _ in range(rounds):
        for bundle in bundles:
            have = [p for p in precisions if p == "fp32" or (bundle / f"model.{p}.onnx").is_file()]
            report = run_bench(
                bundle, backends=["onnxruntime"], precisions=have, batches=batches, data=data, iters=iters,
                reference=False,
            )
            for row in report["rows"]:
                if row["error"]:
                    continue
                kept = best[str(bundle)].get(_key(row))
                if kept is None or row["latency"]["images_per_s"] > kept["latency"]["images_per_s"]:
                    best[str(bundle)][_key(row)] = row
    first = best[str(bundles[0])]
    out: dict[str, Any] = {"machine": machine_info(), "bundles": {}}
    for bundle in bundles:
        info = read_bundle(bundle)
        rows = []
        for key, row in sorted(best[str(bundle)].items()):
            base = first.get(key)
            rows.append({
                "backend": key[0], "precision": key[1], "batch": key[2],
                "images_per_s": round(row["latency"]["images_per_s"], 2),
                "p50_ms": round(row["latency"]["p50_ms"], 2),
                "end_to_end_images_per_s": row.get("end_to_end_images_per_s"),  # pipelined reader, wall clock
                "end_to_end_sequential_images_per_s": row.get("end_to_end_sequential_images_per_s"),
                "postprocess_ms_per_image": row.get("postprocess_ms_per_image"),
                "metrics": row.get("metrics"),
                "speed_vs_first": round(row["latency"]["images_per_s"] / base["latency"]["images_per_s"], 2)
                if base else None,
            })
        out["bundles"][str(bundle)] = {"backbone": info.backbone.get("name", "wide_resnet50_2"), "rows": rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, help="Category folder: real images for timing, and AUROC per row.")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="Interleaved runs per bundle; the best of them is kept.")
    ap.add_argument("--machine", default="2-core AMD EPYC, shared with other jobs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    report = bench_bundles(
        args.bundles, precisions=args.precisions.split(","), batches=[int(b) for b in args.batches.split(",")],
        data=args.data, iters=args.iters, rounds=args.rounds,
    )
    report["machine_note"] = args.machine
    atomic_write_json(args.out, report)
    for part in report["bundles"].values():
        for r in part["rows"]:
            print(f"{part['backbone']:20s} {r['precision']} b{r['batch']}: {r['images_per_s']:8.2f} img/s "
                  f"(x{r['speed_vs_first']} of the first)  {r['metrics'] or ''}")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
