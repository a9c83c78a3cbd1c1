"""Cost of the anomaly-map head (patch map -> image score + smoothed full-size map), old form against new, one run.

The head runs after every model graph: in numpy for onnxruntime/TensorRT rows and ``edge-ad bench``'s post column
(:func:`edge_ad.postprocess.numpy_ops.postprocess`), in torch inside the graph and its ONNX export
(:class:`edge_ad.postprocess.torch_ops.AnomalyMapHead`). Until issue 19 part 6 both resized the patch map to the
image size, then ran two 33-tap Gaussian passes (sigma 4) over it; now both apply ``M_y @ P @ M_x^T`` with the
per-axis matrices ``M = G @ R`` (:func:`~edge_ad.postprocess.numpy_ops.head_matrix`). Arms, per case (SimpleNet:
28x28 -> 224, max; NSA: 224 -> 224 smoothing only, mean), batch (1, 8) and thread count (1, 2):

* numpy ``old``: ``gaussian_smooth(resize_bilinear(p))`` (the previous ``postprocess``, both functions unchanged);
* numpy ``matrix_f32`` (what ``postprocess`` now does), ``matrix_f64`` and ``cv2_sep`` (matrix resize, then
  ``cv2.sepFilter2D`` with ``BORDER_REFLECT``, scipy's "reflect"): the candidates;
* torch ``old`` (``F.interpolate`` + the slice/cat/conv smoothing) and ``matrix`` (the head's ``forward``); for NSA
  the full-size smoothing by convolution (as it was) against ``matrix`` (``AnomalyMapHead.smooth`` now);
* onnxruntime: each torch head exported alone to ONNX (what runs inside an exported graph).

Arms of one group are timed interleaved (one call each per round, the order rotating), so load from other
processes on a shared machine hits them alike; figures are ms per image from the median call and ratios to the
``old`` arm of the same group. Each arm's map is compared with the old numpy map (max abs difference over the map's
range). Results: ``benchmarks/results/postprocess_head.json``.

    python -m edge_ad.benchmarks.bench_postprocess --rounds 30
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.io import atomic_write_json
from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_taps
from edge_ad.postprocess.numpy_ops import (
    apply_head_matrices,
    gaussian_smooth,
    head_matrix,
    postprocess,
    resize_bilinear,
)

RESULTS = Path(__file__).parent / "results" / "postprocess_head.json"
CASES = {  # name -> (patch map side, image side, image score)
    "simplenet_28_to_224": (28, 224, "max"),
    "nsa_224_smooth_only": (224, 224, "mean"),
}


def numpy_arms(out: int) -> dict[str, Callable[[np.ndarray], Any]]:
    size = (out, out)

    def old(p: np.ndarray) -> Any:
        return p.reshape(len(p), -1).max(axis=1), gaussian_smooth(resize_bilinear(p, size))

    def matrix64(p: np.ndarray) -> Any:
        rows = head_matrix(p.shape[1], out, SIGMA, TRUNCATE, "float64")
        cols = head_matrix(p.shape[2], out, SIGMA, TRUNCATE, "float64")
        return p.reshape(len(p), -1).max(axis=1), apply_head_matrices(p, rows, cols).astype(np.float32)

    def cv2_sep(p: np.ndarray) -> Any:
        import cv2

        taps = gaussian_taps().astype(np.float32)
        rows = head_matrix(p.shape[1], out, 0.0, TRUNCATE, "float32")
        cols = head_matrix(p.shape[2], out, 0.0, TRUNCATE, "float32")
        resized = apply_head_matrices(p, rows, cols)
        maps = np.stack([cv2.sepFilter2D(m, -1, taps, taps, borderType=cv2.BORDER_REFLECT) for m in resized])
        return p.reshape(len(p), -1).max(axis=1), maps

    return {
        "old": old,
        "matrix_f32": lambda p: postprocess(p, size),
        "matrix_f64": matrix64,
        "cv2_sep": cv2_sep,
    }


def torch_arms(out: int, grid: int) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """torch modules to time (and export): old and new head, or for NSA's full-size map conv vs matrix smoothing."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edge_ad.postprocess.torch_ops import AnomalyMapHead, reflect_pad

    def conv_smooth(head: AnomalyMapHead, maps: torch.Tensor) -> torch.Tensor:  # the smoothing as it was
        x = F.conv2d(reflect_pad(maps, head.radius, dim=3), head.kernel_h)
        return F.conv2d(reflect_pad(x, head.radius, dim=2), head.kernel_v)

    class OldHead(AnomalyMapHead):
        def forward(self, patch: torch.Tensor) -> Any:  # the head as it was before the matrices
            resized = F.interpolate(patch, size=self.out_size, mode="bilinear", align_corners=False)
            return torch.amax(patch, dim=(1, 2, 3)), conv_smooth(self, resized).squeeze(1)

    class ConvSmooth(nn.Module):  # NSA's graph as it was: mean score, the map smoothed at full size by convolution
        def __init__(self) -> None:
            super().__init__()
            self.head = AnomalyMapHead((out, out))

        def forward(self, patch: torch.Tensor) -> Any:
            return patch.mean(dim=(1, 2, 3)), conv_smooth(self.head, patch).squeeze(1)

    class MatrixSmooth(ConvSmooth):  # NSA's graph now (AnomalyMapHead.smooth)
        def forward(self, patch: torch.Tensor) -> Any:
            return patch.mean(dim=(1, 2, 3)), self.head.smooth(patch).squeeze(1)

    if grid == out:
        return {"old": ConvSmooth().eval(), "matrix": MatrixSmooth().eval()}, torch.from_numpy
    return {"old": OldHead((out, out)).eval(), "matrix": AnomalyMapHead((out, out)).eval()}, torch.from_numpy


def to_onnx(module: Any, grid: int, threads: int) -> Any:
    import onnxruntime as ort
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.zeros(1, 1, grid, grid),),
        buffer,
        opset_version=17,
        dynamo=False,
        input_names=["patch_scores"],
        output_names=["image_score", "anomaly_map"],
        dynamic_axes={"patch_scores": {0: "batch"}, "image_score": {0: "batch"}, "anomaly_map": {0: "batch"}},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda p: session.run(None, {"patch_scores": p[:, None]})


def interleaved(arms: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each arm, one call of each per round, the order rotating."""
    names = list(arms)
    for name in names:  # warm-up (matrix caches, allocator, ORT's first run)
        arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def rel_diff(actual: Any, expected: np.ndarray) -> float:
    """max |actual - expected| / (max - min of expected)."""
    actual = np.asarray(actual.detach().numpy() if hasattr(actual, "detach") else actual, dtype=np.float64)
    return float(np.abs(actual - expected).max() / (expected.max() - expected.min()))


def run(rounds: int, batches: list[int], threads_list: list[int]) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    groups = []
    for case, (grid, out, _) in CASES.items():
        for batch in batches:
            patch = (rng.standard_normal((batch, grid, grid)) * 2.0 + 1.5).astype(np.float32)
            reference = numpy_arms(out)["old"](patch)[1].astype(np.float64)
            modules, _ = torch_arms(out, grid)
            tensor = torch.from_numpy(patch)[:, None]
            for threads in threads_list:
                torch.set_num_threads(threads)
                with threadpool_limits(limits=threads):
                    arms_np = {k: (lambda f=f, p=patch: f(p)) for k, f in numpy_arms(out).items()}
                    arms_torch = {k: (lambda m=m, t=tensor: m(t)) for k, m in modules.items()}
                    sessions = {k: to_onnx(m, grid, threads) for k, m in modules.items()}
                    arms_ort = {k: (lambda s=s, p=patch: s(p)) for k, s in sessions.items()}
                    with torch.no_grad():
                        for kind, arms in (("numpy", arms_np), ("torch", arms_torch), ("onnxruntime", arms_ort)):
                            seconds = interleaved(arms, rounds)
                            outputs = {name: fn()[1] for name, fn in arms.items()}
                            groups.append(
                                {
                                    "case": case,
                                    "implementation": kind,
                                    "batch": batch,
                                    "threads": threads,
                                    "ms_per_image": {k: round(v * 1e3 / batch, 4) for k, v in seconds.items()},
                                    "speedup_vs_old": {k: round(seconds["old"] / v, 1) for k, v in seconds.items()},
                                    "map_diff_vs_old_numpy_rel_range": {
                                        k: float(f"{rel_diff(v, reference):.3g}") for k, v in outputs.items()
                                    },
                                }
                            )
                            print(groups[-1], flush=True)
    return {"machine": machine_info(), "rounds": rounds, "groups": groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args.rounds, args.batches, args.threads)
    report["note"] = args.note
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
