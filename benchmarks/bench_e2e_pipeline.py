"""End to end on the CPU, files -> scores and maps, before and after issue 19 part 6's input-path and graph work, in one
run (the arms interleaved round by round, so a shared machine's load hits them alike: read the ratios).

For one bundle (e.g. the pretrained EfficientNet-Lite0 demo), its fused graph is traced to ONNX twice in this run:
as the exporter wrote it before (``raw``: TF "SAME" padding as separate Pad nodes) and as ``edge-ad export`` now
writes it (``folded``: :func:`edge_ad.onnx_tools.pad_fold.fold_pads_into_convs`). onnxruntime runs each with 2
intra-op threads, with its default thread spinning (``spin``) or ``session.intra_op.allow_spinning=0`` (``nospin``),
at its default ``ORT_ENABLE_ALL``; ``folded_nospin_extended`` is the folded graph at ``ORT_ENABLE_EXTENDED`` (no NCHWc
layout), for the optimisation level's share.

* ``graph``: img/s of each graph x spinning at batch 1 and 8 on a fixed input (median call), and the largest
  difference of the folded graph's outputs from the raw one's;
* ``input_path``: ms per image of ``read_image`` + preprocessing, ``before`` (the per-pixel float normalisation as
  it was, :func:`_normalize_before`) and ``after`` (:meth:`Preprocessing.batch`, the lookup table);
* ``end_to_end``: img/s from files to scores and maps over ``--batches`` batches of ``--batch`` files, wall clock:
  ``before`` (what ``edge-ad bench``'s e2e column measured: each batch decoded, preprocessed, then run, one step
  after the other; raw graph, spinning, old normalisation) against ``sequential`` (the same loop on the new graph
  and preprocessing) and ``pipelined`` (:func:`edge_ad.runtimes.scoring.score_batches` with ``read_ahead=1``, the
  reader ``predict``/``eval``/bench now use: the next batch is read while the graph runs this one), with and
  without spinning; with each arm's largest map difference from ``before``.

Results: ``benchmarks/results/e2e_pipeline_cpu.json`` (with the machine and its load averages).

    OMP_NUM_THREADS=2 python -m edge_ad.benchmarks.bench_e2e_pipeline BUNDLE --images DIR --rounds 5 --note "..."
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.data.images import list_images, read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_json
from edge_ad.onnx_tools.pad_fold import fold_pads_into_convs
from edge_ad.runtimes.scoring import score_batches

RESULTS = Path(__file__).parent / "results" / "e2e_pipeline_cpu.json"


def _normalize_before(pre: Preprocessing, image: np.ndarray) -> np.ndarray:
    """``Preprocessing.normalize`` as it was before the lookup table (kept here as the baseline arm)."""
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    x = (image.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _batch_before(pre: Preprocessing, images: Sequence[np.ndarray]) -> np.ndarray:
    s = pre.image_size
    out = np.empty((len(images), 3, s, s), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = _normalize_before(pre, pre.geometry(img))
    return out


def _graphs(bundle: Path) -> tuple[bytes, bytes, int, Preprocessing]:
    """The bundle's fused graph traced to ONNX (dynamic batch) as before and with the Pads folded."""
    import torch

    from edge_ad.export.onnx_export import OUTPUT_NAMES
    from edge_ad.export.onnx_trace import trace_export
    from edge_ad.models.registry import load_model

    model, info = load_model(bundle)
    size = int(model.image_size)
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))  # two: a batch axis to vary
    raw = trace_export(model.eval().inference_graph(), example, 17, True, OUTPUT_NAMES)
    folded, count = fold_pads_into_convs(raw)
    return raw.SerializeToString(), folded.SerializeToString(), count, info.preprocessing


def _session(graph: bytes, spin: bool, extended: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if extended:  # every fusion but onnxruntime's blocked NCHWc layout (ORT_ENABLE_ALL, the default, has it)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _predict(session: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, amap = session.run(["image_score", "anomaly_map"], {"images": x})
        return score, amap

    return run


def _interleaved(arms: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each arm per round, one call of each per round, the order rotating; one untimed call first."""
    names = list(arms)
    for name in names:
        arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def run(bundle: Path, images: Path, batch: int, batches: int, rounds: int) -> dict[str, Any]:
    raw, folded, pads_folded, pre = _graphs(bundle)
    sessions = {f"{g}_{s}": _session(graph, s == "spin") for g, graph in (("raw", raw), ("folded", folded))
                for s in ("spin", "nospin")}  # fmt: skip
    sessions["folded_nospin_extended"] = _session(folded, False, extended=True)
    files = list_images(images)
    files = (files * (batch // max(1, len(files)) + 1))[:batch]
    size = pre.image_size
    load_before = os.getloadavg()

    graph_rows = []
    for b in (1, batch):
        x = np.random.default_rng(0).standard_normal((b, 3, size, size)).astype(np.float32)
        outs = {k: s.run(None, {"images": x}) for k, s in sessions.items()}
        diff = max(float(np.abs(a - r).max()) for a, r in zip(outs["folded_spin"], outs["raw_spin"], strict=True))
        t = _interleaved({k: (lambda s=s, x=x: s.run(None, {"images": x})) for k, s in sessions.items()}, rounds * 4)
        ips = {k: round(b / statistics.median(v), 2) for k, v in t.items()}
        graph_rows.append({"batch": b, "images_per_s": ips, "folded_vs_raw_max_abs_diff": diff,
                           "folded_over_raw": {s: round(ips[f"folded_{s}"] / ips[f"raw_{s}"], 3)
                                               for s in ("spin", "nospin")},
                           "nospin_over_spin_folded": round(ips["folded_nospin"] / ips["folded_spin"], 3),
                           "extended_over_all_folded_nospin": round(ips["folded_nospin_extended"]
                                                                    / ips["folded_nospin"], 3)})  # fmt: skip
        print(graph_rows[-1], flush=True)

    decoded = [read_image(f) for f in files]
    np.testing.assert_array_equal(pre.batch(decoded), _batch_before(pre, decoded))  # the table is bit-identical
    t = _interleaved(
        {
            "before": lambda: _batch_before(pre, [read_image(f) for f in files]),
            "after": lambda: pre.batch([read_image(f) for f in files]),
            "decode_only": lambda: [read_image(f) for f in files],
            "preprocess_before": lambda: _batch_before(pre, decoded),
            "preprocess_after": lambda: pre.batch(decoded),
        },
        rounds * 4,
    )
    input_path = {k: round(statistics.median(v) * 1e3 / batch, 3) for k, v in t.items()}
    print({"input_path_ms_per_image": input_path}, flush=True)

    items = files * batches

    def sequential(session: Any, make: Callable[[Sequence[Path]], np.ndarray]) -> Callable[[], Any]:
        def go() -> Any:
            maps = []
            for start in range(0, len(items), batch):
                maps.append(_predict(session)(make(items[start : start + batch]))[1])
            return np.concatenate(maps)

        return go

    def pipelined(session: Any) -> Callable[[], Any]:
        def load(chunk: Sequence[Path]) -> np.ndarray:
            return pre.batch([read_image(f) for f in chunk])

        return lambda: score_batches(_predict(session), items, load, batch_size=batch, read_ahead=1)[1]

    def old_make(chunk: Sequence[Path]) -> np.ndarray:
        return _batch_before(pre, [read_image(f) for f in chunk])

    def new_make(chunk: Sequence[Path]) -> np.ndarray:
        return pre.batch([read_image(f) for f in chunk])

    arms = {
        "before": sequential(sessions["raw_spin"], old_make),
        "sequential_spin": sequential(sessions["folded_spin"], new_make),
        "sequential_nospin": sequential(sessions["folded_nospin"], new_make),
        "pipelined_spin": pipelined(sessions["folded_spin"]),
        "pipelined_nospin": pipelined(sessions["folded_nospin"]),
    }
    reference = arms["before"]()
    map_diff = {k: float(np.abs(np.asarray(f()) - reference).max()) for k, f in arms.items()}
    t = _interleaved(arms, rounds)
    e2e = {k: round(len(items) / statistics.median(v), 2) for k, v in t.items()}
    e2e_best = {k: round(len(items) / min(v), 2) for k, v in t.items()}
    print({"end_to_end_images_per_s": e2e}, flush=True)
    return {
        "bundle": str(bundle),
        "image_size": size,
        "batch": batch,
        "batches_per_round": batches,
        "rounds": rounds,
        "pads_folded": pads_folded,
        "onnxruntime_threads": 2,
        "graph": graph_rows,
        "input_path_ms_per_image": input_path,
        "end_to_end_images_per_s": e2e,
        "end_to_end_images_per_s_best_round": e2e_best,
        "end_to_end_over_before": {k: round(v / e2e["before"], 3) for k, v in e2e.items()},
        "end_to_end_max_abs_map_diff_from_before": map_diff,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files (any size)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="batches per end-to-end round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args.bundle, args.images, args.batch, args.batches, args.rounds)
    report["note"] = args.note
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
