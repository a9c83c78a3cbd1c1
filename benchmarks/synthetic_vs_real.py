"""Does synthetic-validation AUROC predict real test AUROC? Spearman rank correlation across epochs x seeds.

Why: every choice that would need a defect (epoch, INT8 recipe, threshold) is made on synthetic NSA anomalies on
held-out good images. That is only sound if ranking models by synthetic AUROC ranks them like the real defects do.
Each family trains exactly as ``edge-ad demo --model NAME`` does (its :data:`edge_ad.cli.demo.DEMO_RECIPES`
entry), on one demo category, for a few seeds; after every epoch a hook scores the REAL labelled test split. This
study is the only place that reads test labels, and it only measures: nothing here picks an epoch or a setting.
The synthetic figures are the trainer's own (``training.history[i].synthetic_*_auroc`` in the bundle).
Writes benchmarks/results/synthetic_vs_real.json.

    python -m edge_ad.benchmarks.synthetic_vs_real --seeds 0 1 --epochs simplenet=12 nsa=60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("EDGE_AD_QUIET", "1")

import numpy as np  # noqa: E402

from edge_ad.bench.run import machine_info  # noqa: E402
from edge_ad.data.images import read_image  # noqa: E402
from edge_ad.data.layout import resolve_category, test_samples  # noqa: E402
from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.evaluation.evaluate import sample_mask  # noqa: E402
from edge_ad.evaluation.metrics import auroc, pixel_auroc  # noqa: E402
from edge_ad.io import atomic_write_json  # noqa: E402

METRICS = ("image", "pixel")
RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_vs_real.json"
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RealSplit:
    """A category's labelled test split, preprocessed once (normalised float32 NCHW), with labels and masks."""

    batch: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def load_real_split(category_dir: str | Path, preprocessing: Preprocessing) -> RealSplit:
    """The test split through the model's geometry; masks through the same geometry (as ``edge-ad eval`` does)."""
    samples = test_samples(category_dir, require_masks=True)
    images = [read_image(s.path) for s in samples]
    masks = np.stack([sample_mask(s, im, preprocessing) for s, im in zip(samples, images, strict=True)])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    return RealSplit(preprocessing.batch(images), labels, masks)


def score_real(predict: Predict, split: RealSplit, batch_size: int = 8) -> dict[str, float]:
    """Image and pixel AUROC of ``predict`` on the real split (the same metric functions as ``edge-ad eval``)."""
    scores, maps = [], []
    for start in range(0, len(split.labels), batch_size):
        s, m = predict(split.batch[start : start + batch_size])
        scores.append(np.asarray(s, np.float32).reshape(-1))
        maps.append(np.asarray(m, np.float32))
    return {
        "image": float(auroc(split.labels, np.concatenate(scores))),
        "pixel": float(pixel_auroc(split.masks, np.concatenate(maps))),
    }


def real_hook(split: RealSplit, log: list[dict[str, Any]]) -> Callable[[int, Predict], None]:
    """The trainer's ``on_epoch``: appends ``{"epoch", "image", "pixel"}`` of the real split to ``log``."""

    def on_epoch(epoch: int, predict: Predict) -> None:
        log.append({"epoch": int(epoch), **score_real(predict, split)})

    return on_epoch


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pair_epochs(history: Sequence[dict[str, Any]], real: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: the trainer's synthetic AUROCs (history entry ``epoch - 1``) beside the real ones.

    A missing or NaN synthetic figure stays None (the row is kept, the correlation skips it).
    """
    if len(real) != len(history):
        raise ValueError(f"the hook saw {len(real)} epochs but the bundle's history has {len(history)}")
    rows = []
    for entry in real:
        h = history[entry["epoch"] - 1]
        rows.append(
            {
                "epoch": entry["epoch"],
                **{f"synthetic_{m}": _finite(h.get(f"synthetic_{m}_auroc")) for m in METRICS},
                **{f"real_{m}": _finite(entry[m]) for m in METRICS},
            }
        )
    return rows


def spearman(xs: Sequence[float | None], ys: Sequence[float | None]) -> dict[str, Any]:
    """Spearman's rho over the pairs where both are finite; rho None when fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    out: dict[str, Any] = {"n": len(pairs), "rho": None, "p": None}
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return out
    res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    out["rho"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def selection(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """What picking the epoch by synthetic AUROC would have given, measured on the real split (never used to pick)."""
    scored = [r for r in rows if r[f"synthetic_{metric}"] is not None and r[f"real_{metric}"] is not None]
    if not scored:
        return {"epoch_by_synthetic": None}
    pick = max(scored, key=lambda r: (r[f"synthetic_{metric}"], r["epoch"]))  # ties: the later epoch
    best = max(scored, key=lambda r: r[f"real_{metric}"])
    return {
        "epoch_by_synthetic": pick["epoch"],
        "real_at_synthetic_pick": pick[f"real_{metric}"],
        "real_at_final_epoch": rows[-1][f"real_{metric}"],
        "best_real": best[f"real_{metric}"],
        "best_real_epoch": best["epoch"],
    }


def summarise(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per family and metric: rho pooled over epochs x seeds, rho per seed, and the epoch-selection check."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_family.setdefault(run["family"], []).append(run)
    out: dict[str, Any] = {}
    for family, fruns in by_family.items():
        out[family] = {}
        for m in METRICS:
            rows = [r for run in fruns for r in run["epochs"]]
            out[family][m] = {
                "pooled": spearman([r[f"synthetic_{m}"] for r in rows], [r[f"real_{m}"] for r in rows]),
                "per_seed": {
                    str(run["seed"]): spearman(
                        [r[f"synthetic_{m}"] for r in run["epochs"]], [r[f"real_{m}"] for r in run["epochs"]]
                    )
                    for run in fruns
                },
                "selection": {str(run["seed"]): selection(run["epochs"], m) for run in fruns},
            }
    return out


def run_one(family: str, data: Path, work: Path, category: str, epochs: int, seed: int) -> dict[str, Any]:
    """Train one family/seed as its demo does, scoring the real split after every epoch; return its rows."""
    from edge_ad.cli.demo import demo_recipe

    recipe = demo_recipe(family)
    split = load_real_split(resolve_category(data, category), Preprocessing())  # the demo recipes' preprocessing
    real: list[dict[str, Any]] = []
    bundle = work / f"{family}-seed{seed}"
    t0 = time.perf_counter()
    recipe.train(
        data, bundle, category=category, epochs=epochs, seed=seed, device="cpu", resume=False,
        on_epoch=real_hook(split, real),
    )
    seconds = time.perf_counter() - t0
    history = json.loads((bundle / "config.json").read_text())["training"]["history"]
    return {
        "family": family, "seed": seed, "epochs_run": epochs, "seconds": round(seconds, 1),
        "epochs": pair_epochs(history, real),
    }


def _epochs_arg(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = int(value)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("synthetic-vs-real-work"), help="data and bundles go here")
    ap.add_argument("--category", default="brushed_metal")
    ap.add_argument("--data-seed", type=int, default=0, help="demo data seed (one dataset for every run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    ap.add_argument("--families", nargs="+", default=["nsa", "simplenet"])
    ap.add_argument("--epochs", nargs="+", default=["simplenet=12", "nsa=60"], help="FAMILY=N")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="what else ran on the machine, etc.")
    args = ap.parse_args(argv)

    import torch

    from edge_ad.datasets.demo import make_demo_dataset

    data = args.work / "data"
    make_demo_dataset(data, [args.category], seed=args.data_seed)
    epochs = _epochs_arg(args.epochs)
    settings = {
        "category": args.category, "data_seed": args.data_seed, "seeds": args.seeds, "epochs": epochs,
        "recipes": "edge_ad.cli.demo.DEMO_RECIPES (as edge-ad demo --model NAME trains)",
        "real": "labelled test split of the demo category, scored after every epoch (measured, never chosen on)",
        "synthetic": "training.history[i].synthetic_{image,pixel}_auroc written by the trainer",
    }
    machine = {**machine_info(), "torch_threads": torch.get_num_threads(), "note": args.note}
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for family in args.families:
        for seed in args.seeds:
            runs.append(run_one(family, data, args.work / "models", args.category, epochs[family], seed))
            print(f"{family} seed {seed}: {runs[-1]['seconds']} s", flush=True)
            # written after every run, so a study cut short keeps what it measured
            report = {"machine": machine, "settings": settings, "correlations": summarise(runs), "runs": runs}
            atomic_write_json(args.out, report)
    for family, per_metric in report["correlations"].items():
        for m, c in per_metric.items():
            print(f"{family} {m}: pooled rho {c['pooled']['rho']} (n {c['pooled']['n']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
