"""RealNet beside SimpleNet, one run, one machine, the same demo images: what fp16 and INT8 change, and speed.

Why: figures of a shared CPU from different runs are not comparable; ratios from one run are. Both families train
with their ``edge-ad demo`` recipes (pretrained EfficientNet-Lite0; SimpleNet 30 epochs at 224 px, RealNet
``REALNET_CPU_DEMO`` at 128 px) on the demo category, then go through the shared stages only:

* export fp32, fp16 and INT8 (``edge_ad.export.export``: the INT8 recipe chosen by calibration's label-free search);
* what fp16 and INT8 change against the fp32 ONNX on the category's test images (score max, map max and map mean as
  a share of the fp32 maps' range, as the README states NSA's), and image / pixel AUROC of each ONNX
  (``evaluate_model``);
* ``edge-ad bench`` rows (:func:`edge_ad.bench.run.run_bench`: torch fp32, onnxruntime fp32 / fp16 / int8 at batch 1
  and 4, with GFLOP per image counted from each ONNX), and RealNet / SimpleNet throughput ratios.

One torch thread; onnxruntime at its default threads, as ``edge-ad bench`` runs it. Writes
benchmarks/results/realnet_cpu.json naming the machine and its load.

    python -m edge_ad.benchmarks.bench_realnet --iters 10
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

from edge_ad.bench.run import machine_info, run_bench  # noqa: E402
from edge_ad.cli.demo import DEMO_GOOD_IMAGES, demo_recipe  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.datasets.demo import DEFAULT_DEMO_CATEGORY, make_demo_dataset  # noqa: E402
from edge_ad.evaluation.evaluate import evaluate_model  # noqa: E402
from edge_ad.export import export  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402
from edge_ad.runtimes.onnx_runtime import OnnxRuntime  # noqa: E402

RESULT = Path(__file__).parent / "results" / "realnet_cpu.json"
FAMILIES = ("simplenet", "realnet")
PRECISIONS = ("fp32", "fp16", "int8")


def _train(family: str, data: Path, out: Path) -> dict[str, Any]:
    recipe = demo_recipe(family)
    t0 = time.perf_counter()
    recipe.train(data.parent, out, category=data.name, epochs=recipe.epochs, seed=0, device="cpu", resume=False)
    return {"epochs": recipe.epochs, "wall_seconds": round(time.perf_counter() - t0, 1)}


def _change(path: Path, reference: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> dict[str, float]:
    """Change of image scores and maps against the fp32 ONNX on ``x``, as a share of the fp32 maps' range."""
    scores, maps = OnnxRuntime(path).predict(x)
    span = max(float(np.ptp(reference[1])), 1e-12)
    d_map = np.abs(maps - reference[1])
    return {
        "score_max_per_map_range": float(np.abs(scores - reference[0]).max() / span),
        "map_max_per_map_range": float(d_map.max() / span),
        "map_mean_per_map_range": float(d_map.mean() / span),
        "fp32_map_range": span,
    }


def _family(family: str, data: Path, root: Path, iters: int) -> dict[str, Any]:
    bundle = root / family
    result: dict[str, Any] = {"training": _train(family, data, bundle), "exports": {}}
    paths: dict[str, Path] = {}
    for precision in PRECISIONS:
        t0 = time.perf_counter()
        done = export(bundle, "onnx", precision)
        assert done.path is not None
        paths[precision] = done.path
        entry: dict[str, Any] = {"export_seconds": round(time.perf_counter() - t0, 1)}
        if done.report is not None:
            keys = ("method", "recipe", "excluded_parts", "selection_note")
            entry["int8_recipe"] = {k: done.report[k] for k in keys if k in done.report}
        result["exports"][precision] = entry
    test = sorted((data / "test").glob("*/*.png"))
    fp32 = OnnxRuntime(paths["fp32"])
    x = fp32.preprocessing.batch([read_image(p) for p in test])
    reference = fp32.predict(x)
    for precision, path in paths.items():
        overall = evaluate_model(path, data, backend="onnxruntime")["metrics"]["overall"]
        entry = result["exports"][precision]
        entry["image_auroc"], entry["pixel_auroc"] = overall["image_auroc"], overall["pixel_auroc"]
        if precision != "fp32":
            entry["vs_fp32"] = _change(path, reference, x)
    report = run_bench(bundle, backends=("torch", "onnxruntime"), precisions=PRECISIONS, batches=(1, 4),
                       data=data / "train" / "good", warmup=2, iters=iters, reference=False)  # fmt: skip
    result["bench_rows"] = [
        {
            "backend": r["backend"], "precision": r["precision"], "batch": r["batch"],
            "images_per_s": None if r["error"] else round(r["latency"]["images_per_s"], 2),
            "end_to_end_images_per_s": None if r["error"] else round(r["end_to_end_images_per_s"], 2),
            "gflop_per_image": r["gflop_per_image"], "error": r["error"],
        }  # fmt: skip
        for r in report["rows"]
    ]
    result["test_images"] = len(test)
    print(json.dumps({family: result}), flush=True)
    return result


def _ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def rows(family: str) -> dict[tuple[str, str, int], dict[str, Any]]:
        return {(r["backend"], r["precision"], r["batch"]): r for r in results[family]["bench_rows"]}

    real, simple = rows("realnet"), rows("simplenet")
    ratios: dict[str, float | None] = {}
    for key in sorted(set(real) & set(simple)):
        a, b = real[key]["images_per_s"], simple[key]["images_per_s"]
        ratios[f"{key[0]}_{key[1]}_batch{key[2]}_throughput_realnet_over_simplenet"] = (
            round(a / b, 3) if a and b else None
        )
    ga, gb = real[("onnxruntime", "fp32", 1)]["gflop_per_image"], simple[("onnxruntime", "fp32", 1)]["gflop_per_image"]
    ratios["gflop_per_image_realnet_over_simplenet"] = round(ga / gb, 3) if ga and gb else None
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--category", default=DEFAULT_DEMO_CATEGORY)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = round(os.getloadavg()[0], 2)  # other jobs on the machine slow every row alike
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-ad-bench-realnet-") as tmp:
        root = Path(tmp)
        (data,) = make_demo_dataset(root / "data", [args.category], seed=0, n_train=DEMO_GOOD_IMAGES)
        for family in FAMILIES:
            results[family] = _family(family, data, root, args.iters)
    result = {
        "benchmark": "bench_realnet",
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        "settings": {**vars(args), "torch_threads": 1, "onnxruntime_threads": "default", "batches": [1, 4]},
        "families": results,
        "ratios": _ratios(results),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULT, result)
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
