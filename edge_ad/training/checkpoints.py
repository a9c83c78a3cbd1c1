"""What every family's training shares around its checkpoints: the run's fingerprint, the seeded generators that make
a resumed run equal an uninterrupted one, the held-out split, and loading a checkpoint without pickle.

Moved out of SimpleNet's trainer so that the shared training code (run start, finish) and every family read them
from here, never from another family.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from edge_ad.progress import console

CHECKPOINT_NAME = "checkpoint.pt"


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A torch generator seeded by ``(seed, stream)``: every draw of a run (split, order, noise) is reproducible."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + stream) % (2**63))
    return g


def split_holdout(n: int, cfg: Any) -> tuple[list[int], list[int]]:
    """Deterministic (train, holdout) index split of the good training images (``cfg``: any family's train config
    with ``seed``, ``holdout_fraction`` and ``min_holdout``)."""
    n_hold = max(cfg.min_holdout, round(n * cfg.holdout_fraction)) if cfg.holdout_fraction > 0 else 0
    if n - n_hold < 1:
        n_hold = 0
    order = torch.randperm(n, generator=seeded_generator(cfg.seed, -1)).tolist()
    hold = sorted(order[:n_hold])
    train = sorted(order[n_hold:])
    return train, hold


def load_checkpoint(path: Path | None, fingerprint: str, device: str | torch.device) -> dict | None:
    """The checkpoint every family's trainer resumes from, or None when there is none; one of another run is refused.

    Loaded with ``weights_only``: plain tensors and containers, never arbitrary pickled objects.
    """
    if path is None:
        return None
    if not path.exists():
        console.log(f"no checkpoint at {path} to resume: training from the first epoch")
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} was written for different data or settings; delete it or use another --out to start afresh"
        )
    return state


# Settings a resumed run may change: more epochs continue a run exactly (Trainer.resume checks the count).
RESUMABLE_SETTINGS = {"train": ("epochs",)}


def run_fingerprint(**parts: object) -> str:
    """Hash of what determines a run (data files, configs, backbone); a checkpoint only resumes its own run.

    The ``train`` part's ``epochs`` is left out (see ``RESUMABLE_SETTINGS``): asking for more epochs extends a run.
    """
    kept = {
        name: {k: v for k, v in part.items() if k not in RESUMABLE_SETTINGS.get(name, ())}
        if isinstance(part, dict)
        else part
        for name, part in parts.items()
    }
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
