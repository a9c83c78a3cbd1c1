"""onnxruntime INT8 vs FP32 throughput on this CPU, 224x224 SimpleNet, batch 1 and 8, in one run.

A bundle is trained for one epoch on the procedural demo data (random WideResNet50 trunk; speed does not
depend on the weights' quality), exported once to fp32 ONNX with a dynamic batch axis, and quantized twice
from the same calibration statistics (the bundle's training images):

* ``int8-tensorrt``: the Q/DQ placement built for TensorRT (the ``model.int8.onnx`` that ships);
* ``int8-cpu``: the placement onnxruntime's CPU kernels run in INT8 (uint8 activations; not for TensorRT).

The three models are timed interleaved (one call of each per round, the order rotating every round), so load
from other processes on a shared machine hits all arms alike; speeds are images/s from the median call time
and ratios are to fp32 at the same batch. The demo test split is also evaluated with each model (image/pixel
AUROC) to show what the speed costs. Results: ``benchmarks/results/int8_cpu.json``.

    python -m edge_ad.benchmarks.bench_int8_cpu --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.io import atomic_write_json
from edge_ad.runtimes.onnx_runtime import OnnxRuntime

RESULTS = Path(__file__).parent / "results" / "int8_cpu.json"


def build_bundle(workdir: Path, image_size: int) -> Path:
    """Demo data + a one-epoch SimpleNet bundle (random trunk, BatchNorm re-estimated) + its fp32 export."""
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.datasets.demo import make_demo_dataset
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.models.simplenet.model import SimpleNetConfig
    from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
    from edge_ad.models.simplenet.trainer import TrainConfig

    (category,) = make_demo_dataset(
        workdir / "data", ["washer"], seed=0, n_train=24, n_test_good=6, n_test_per_defect=3, image_size=256
    )
    bundle = train_bundle(
        category,
        workdir / "bundle",
        backbone=BackboneSpec(random=True),
        preprocessing=Preprocessing(image_size=image_size, resize=int(round(image_size * 256 / 224))),
        model_cfg=random_backbone_recipe(SimpleNetConfig()),
        train_cfg=TrainConfig(epochs=1, batch_size=4, seed=0),
    )
    export_onnx(bundle, bundle / "model.fp32.onnx", dynamic_batch=True, batch_size=2)
    return bundle


def time_interleaved(
    models: dict[str, Path], batch: int, size: int, rounds: int, threads: int
) -> dict[str, list[float]]:
    """Per-call seconds of each model; every round calls each model once, starting from a rotating one."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    # the runtime's own session (CPU provider, `threads` intra-op threads, one inter-op): what edge-ad runs
    sessions = {name: OnnxRuntime(path, threads=threads).session for name, path in models.items()}
    for s in sessions.values():  # warm-up
        s.run(None, {"images": x})
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            sessions[name].run(None, {"images": x})
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed calls per model and batch size")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--method", default="percentile", help="calibration method of the INT8 models")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the bundle here (default: a temp folder)")
    args = ap.parse_args()

    from edge_ad.calibration import CalibrationReader, prepare_calibration, quantize_int8
    from edge_ad.calibration.recipes import _evaluate, evaluation_samples

    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        bundle = build_bundle(workdir, args.image_size)
        fp32 = bundle / "model.fp32.onnx"
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        calibration = prepare_calibration(fp32, CalibrationReader(fp32, batch_size=2))
        t_calibrate = time.perf_counter() - t0
        t0 = time.perf_counter()
        models = {
            "fp32": fp32,
            "int8-tensorrt": quantize_int8(fp32, calibration, method=args.method, target="tensorrt"),
            "int8-cpu": quantize_int8(fp32, calibration, method=args.method, target="cpu"),
        }
        t_quantize = (time.perf_counter() - t0) / 2
        calibration.cleanup()

        rows: list[dict[str, Any]] = []
        for batch in (1, 8):
            times = time_interleaved(models, batch, args.image_size, args.rounds, args.threads)
            fp32_median = statistics.median(times["fp32"])
            for name, seconds in times.items():
                median = statistics.median(seconds)
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "median_ms": round(median * 1e3, 1),
                        "images_per_s": round(batch / median, 2),
                        "vs_fp32": round(fp32_median / median, 3),
                    }
                )

        samples = evaluation_samples(None, fp32)
        accuracy = {}
        for name, path in models.items():
            metrics = _evaluate(path, samples)[1]["overall"]
            accuracy[name] = {k: round(metrics[k], 4) for k in ("image_auroc", "pixel_auroc", "aupro") if k in metrics}

    result = {
        "benchmark": "int8_cpu_onnxruntime",
        "machine": machine_info(),
        "threads": args.threads,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "calibration": {"method": args.method, "images": len(calibration.reader_info["names"])},
        "seconds": {
            "build_bundle_and_export": round(t_build, 1),
            "calibrate": round(t_calibrate, 1),
            "quantize_each": round(t_quantize, 1),
        },
        "rows": rows,
        "accuracy_demo_test_split": {"images": len(samples), **accuracy},
        "note": (
            "onnxruntime CPUExecutionProvider; fp32 and both INT8 models timed interleaved in the same run "
            "(median of rounds after one warm-up). int8-tensorrt is the TensorRT placement (inputs of weighted "
            "layers quantized, outputs float): onnxruntime's CPU kernels do not run it in INT8. int8-cpu uses "
            "uint8 activations and int32 biases (QLinearConv), which TensorRT cannot take. Random-weight demo "
            "model: accuracy figures show the INT8 change, not SimpleNet's accuracy."
        ),
    }
    atomic_write_json(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
