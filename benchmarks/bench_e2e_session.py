"""End to end as deployed: one exported model, one onnxruntime session, one process, files -> scores and maps.

Why beside ``bench_e2e_pipeline``: that script interleaves five sessions in one process so a shared machine's load
hits them alike, but then one session's idle intra-op threads (spinning, by default) take cycles from the next
session's run, which favours ``spin=False`` in a way no deployment sees. Here every arm runs in a process of its own,
one after the other, and the arms alternate over ``--rounds`` rounds; run it on an idle machine.

Arms: onnxruntime thread spinning on or off (:class:`~edge_ad.runtimes.onnx_runtime.OnnxRuntime`'s ``spin``) x
the batch loop sequential (``read_ahead=0``: read, then score) or pipelined (``read_ahead=1``: the prefetching
reader reads the next batch while the graph runs this one), the loop being
:func:`~edge_ad.runtimes.scoring.score_batches` in both. Each arm reports the graph's img/s at ``--batch`` on a fixed
batch (median of 40 calls) and the end-to-end img/s over all ``--images`` files (median of 5 passes).

    OMP_NUM_THREADS=2 python -m edge_ad.benchmarks.bench_e2e_session BUNDLE --images DIR --rounds 2 --note "idle"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import artifact_path
from edge_ad.bench.run import machine_info
from edge_ad.bundle import read_bundle
from edge_ad.data.images import list_images, read_image
from edge_ad.io import atomic_write_json
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from edge_ad.runtimes.scoring import score_batches

RESULTS = Path(__file__).parent / "results" / "e2e_session_cpu.json"
ARMS = [(spin, ahead) for spin in (False, True) for ahead in (0, 1)]


def measure_arm(bundle: Path, images: Path, batch: int, spin: bool, read_ahead: int, count: int) -> dict[str, Any]:
    """One arm in this process: graph img/s on a fixed batch, then end-to-end img/s over the files."""
    pre = read_bundle(bundle).preprocessing
    runtime = OnnxRuntime(artifact_path(bundle, "fp32"), threads=2, spin=spin)
    files = list_images(images)[:count]
    if len(files) < batch:
        raise SystemExit(f"{images}: {len(files)} image(s), fewer than one batch of {batch}")

    def load(chunk: list[Path]) -> np.ndarray:
        return np.stack([pre(read_image(f)) for f in chunk])

    fixed = load(files[:batch])
    for _ in range(5):
        runtime.predict(fixed)
    calls = []
    for _ in range(40):
        t0 = time.perf_counter()
        runtime.predict(fixed)
        calls.append(time.perf_counter() - t0)
    passes = []
    for _ in range(5):
        t0 = time.perf_counter()
        score_batches(runtime.predict, files, load, batch_size=batch, read_ahead=read_ahead)
        passes.append(len(files) / (time.perf_counter() - t0))
    return {
        "spin": spin,
        "read_ahead": read_ahead,
        "graph_images_per_s": round(batch / statistics.median(calls), 1),
        "end_to_end_images_per_s": round(statistics.median(passes), 1),
        "end_to_end_passes": [round(p, 1) for p in passes],
    }


def run(bundle: Path, images: Path, batch: int, rounds: int, count: int) -> dict[str, Any]:
    """Every arm ``rounds`` times, each in a fresh process; the load average before and after."""
    rows = []
    load_before = os.getloadavg()
    for r in range(rounds):
        for spin, ahead in ARMS:
            arm = ["--batch", str(batch), "--count", str(count), "--arm", f"{int(spin)},{ahead}"]
            command = [sys.executable, "-m", "edge_ad.benchmarks.bench_e2e_session", str(bundle), "--images"]
            command += [str(images), *arm]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"round": r, **row})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for spin, ahead in ARMS:
        mine = [x for x in rows if x["spin"] == spin and x["read_ahead"] == ahead]
        summary[f"{'spin' if spin else 'nospin'}_{'pipelined' if ahead else 'sequential'}"] = {
            "graph_images_per_s": [x["graph_images_per_s"] for x in mine],
            "end_to_end_images_per_s": [x["end_to_end_images_per_s"] for x in mine],
        }
    return {
        "bundle": bundle.name,
        "batch": batch,
        "images": count,
        "onnxruntime_threads": 2,
        "machine": machine_info(),
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "rows": rows,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--count", type=int, default=64, help="files per end-to-end pass")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: 'SPIN,READ_AHEAD', one arm in this process
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.arm:
        spin, ahead = (int(x) for x in args.arm.split(","))
        print(json.dumps(measure_arm(args.bundle, args.images, args.batch, bool(spin), ahead, args.count)))
        return
    report = run(args.bundle, args.images, args.batch, args.rounds, args.count)
    report["note"] = args.note
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
