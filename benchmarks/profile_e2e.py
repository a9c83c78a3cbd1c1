"""Where the time of one exported SimpleNet goes, end to end on the CPU: decode, preprocessing, graph, head.

For a bundle with an exported ``model.fp32.onnx`` (dynamic batch), per batch size, timed interleaved (one call of
each stage per round, the order rotating, so a shared machine's load hits every stage alike):

* ``decode``: :func:`edge_ad.data.images.read_image` of the image files;
* ``preprocess``: the bundle's :class:`~edge_ad.data.preprocess.Preprocessing` of the decoded images;
* ``graph_to_patch_scores``: onnxruntime on the graph cut at ``patch_scores`` (backbone, aggregation,
  discriminator: :func:`onnx.utils.extract_model`);
* ``in_graph_head``: onnxruntime on the graph's head alone, cut from ``patch_scores`` to the outputs (the head's
  MatMuls and ReduceMax, as they run inside the exported graph);
* ``graph_full``: onnxruntime on the whole graph (what ``OnnxRuntime.predict`` runs);
* ``numpy_head``: :func:`edge_ad.postprocess.numpy_ops.postprocess` on the patch map, as ``edge-ad bench``'s post
  column times it (the head the graph declares, in numpy, off the graph), with numpy's BLAS threads as they are,
  and ``numpy_head_1_blas_thread`` the same limited to one BLAS thread (threadpoolctl): on a busy 2-core machine a
  multi-threaded BLAS call this small waits for a second core (milliseconds), one thread does not;
* ``end_to_end``: decode + preprocess + the whole graph.

Figures are ms per image from the median call, plus the share of ``end_to_end``; with the GFLOP per image of the
graph (:func:`edge_ad.export.onnx_graph.graph_flops`). Results: ``benchmarks/results/profile_e2e.json``.

    python -m edge_ad.benchmarks.profile_e2e BUNDLE --images DIR --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_ad.bench.run import machine_info
from edge_ad.bundle import read_bundle
from edge_ad.data.images import list_images, read_image
from edge_ad.io import atomic_write_json
from edge_ad.onnx_tools.onnx_graph import graph_flops
from edge_ad.postprocess.image_score import HeadDeclaration
from edge_ad.postprocess.numpy_ops import postprocess

RESULTS = Path(__file__).parent / "results" / "profile_e2e.json"


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _interleaved(stages: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    names = list(stages)
    for name in names:
        stages[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            stages[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def profile(bundle: Path, images: Path, batches: list[int], rounds: int, threads: int) -> dict[str, Any]:
    import onnx

    info = read_bundle(bundle)
    model_path = bundle / "model.fp32.onnx"
    model = onnx.load(str(model_path))
    head = HeadDeclaration.of_metadata({p.key: p.value for p in model.metadata_props}, str(model_path))
    files = list_images(images)
    if len(files) < max(batches):
        files = (files * max(batches))[: max(batches)]
    with tempfile.TemporaryDirectory() as tmp:
        cut, head_cut = Path(tmp) / "to_patch_scores.onnx", Path(tmp) / "head.onnx"
        onnx.utils.extract_model(str(model_path), str(cut), ["images"], ["patch_scores"])
        onnx.utils.extract_model(str(model_path), str(head_cut), ["patch_scores"], ["image_score", "anomaly_map"])
        full, trunk, head_graph = (_session(p, threads) for p in (model_path, cut, head_cut))
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController()
        pre = info.preprocessing
        size = pre.image_size
        rows = []
        for b in batches:
            batch_files = files[:b]
            decoded = [read_image(f) for f in batch_files]
            x = pre.batch(decoded)
            patch4 = trunk.run(["patch_scores"], {"images": x})[0]
            patch = patch4[:, 0]
            stages = {
                "decode": lambda fs=batch_files: [read_image(f) for f in fs],
                "preprocess": lambda d=decoded: pre.batch(d),
                "graph_to_patch_scores": lambda x=x: trunk.run(["patch_scores"], {"images": x}),
                "in_graph_head": lambda p=patch4: head_graph.run(None, {"patch_scores": p}),
                "graph_full": lambda x=x: full.run(None, {"images": x}),
                "numpy_head": lambda p=patch: postprocess(
                    p, (size, size), sigma=head.smoothing_sigma, image_score=head.image_score
                ),
                "end_to_end": lambda fs=batch_files: full.run(None, {"images": pre.batch([read_image(f) for f in fs])}),
            }

            def one_thread_head(p: Any = patch, numpy_head: Callable[..., Any] = stages["numpy_head"]) -> Any:
                with blas.limit(limits=1, user_api="blas"):
                    return numpy_head(p)

            stages["numpy_head_1_blas_thread"] = one_thread_head
            seconds = _interleaved(stages, rounds)
            ms = {k: v * 1e3 / b for k, v in seconds.items()}
            rows.append(
                {
                    "batch": b,
                    "ms_per_image": {k: round(v, 3) for k, v in ms.items()},
                    "share_of_end_to_end": {
                        k: round(ms[k] / ms["end_to_end"], 4) for k in ms if k not in ("graph_full", "end_to_end")
                    },
                    "end_to_end_images_per_s": round(1e3 / ms["end_to_end"], 2),
                    "patch_map": list(patch.shape[1:]),
                }
            )
            print(rows[-1], flush=True)
    return {
        "bundle": str(bundle),
        "image_size": size,
        "head": {"image_score": head.image_score, "smoothing_sigma": head.smoothing_sigma},
        "graph_gflop_per_image": {k: round(v / 1e9, 4) for k, v in graph_flops(model).items()},
        "onnxruntime_threads": threads,
        "rounds": rounds,
        "machine": machine_info(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of images to decode (any size)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = profile(args.bundle, args.images, args.batches, args.rounds, args.threads)
    report["note"] = args.note
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
