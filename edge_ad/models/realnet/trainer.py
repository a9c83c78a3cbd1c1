"""RealNet training on synthetic anomalies: good images -> AFS indices (once) -> epochs of L_recon + L_seg -> bundle.

Training pairs come from :func:`edge_ad.synthesis.anomaly_mix`: half the examples stay normal, the rest are Perlin
blends (of an SDAS folder, a texture folder, or the category's own images when neither is given) and NSA patches,
so training needs no download. Each anomalous image ``A`` is paired with its good original ``I``; the loss is
``L_recon = sum_k MSE(G_k(phi_k(A)), phi_k(I))`` on the AFS-selected channels plus ``L_seg``, the cross-entropy of the
decoder's two-class map against the mask (cell anomalous when at least half its pixels are).

AFS runs once before the first epoch, on ``afs_pairs`` anomalous examples (seeded), and its indices go into the
model's buffers, hence into the bundle's weights; the bundle's config records the sizes and the training record the
indices. Determinism: the model's init from ``torch.manual_seed(seed)``, epoch ``e`` shuffles with
``seeded_generator(seed, e)`` and draws example ``j`` of batch ``b`` with ``example_rng(seed * 1_000_003 + e, b,
j)``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_with
from edge_ad.models.backbones import get_backbone
from edge_ad.models.backbones.choice import BackboneSpec, setup_backbone
from edge_ad.models.realnet.afs import AfsScorer, select_channels
from edge_ad.models.realnet.model import RealNet, RealNetConfig
from edge_ad.progress import console
from edge_ad.synthesis import params_for
from edge_ad.synthesis.generator import example_rng
from edge_ad.synthesis.sources import SourceMix, anomaly_mix, object_background
from edge_ad.thresholds.rules import DEFAULT_SIGMAS
from edge_ad.training.checkpoints import CHECKPOINT_NAME, load_checkpoint, run_fingerprint, seeded_generator
from edge_ad.training.epoch_loop import EpochLoop
from edge_ad.training.epoch_validation import EpochValidation, OnEpoch, check_validation_settings
from edge_ad.training.finish import finish_bundle
from edge_ad.training.run_start import data_fingerprint, start_run

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_RESIZE",
    "PRESETS",
    "REALNET_CPU_DEMO",
    "REALNET_PAPER",
    "RealNetTrainConfig",
    "compute_afs",
    "train_realnet_bundle",
]


@dataclass
class RealNetTrainConfig:
    """Optimisation and data constants; defaults are the reference's (Adam 1e-4, batch 16)."""

    epochs: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    afs_pairs: int = 64  # anomalous examples AFS scores the channels on
    textures: str | None = None  # texture folder (None: the category's own images)
    sdas: str | None = None  # folder of SDAS / SIA samples
    nsa: bool = True  # NSA patches beside the blends
    kind: str | None = None  # object | texture, for categories outside the NSA table
    seed: int = 0
    holdout_fraction: float = 0.1
    min_holdout: int = 2
    threshold_sigmas: float = DEFAULT_SIGMAS
    synthetic_per_image: int = 3
    validate_every: int = 1
    select: str = "final"
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_validation_settings(self.select, self.synthetic_per_image, self.validate_every)
        if self.epochs < 1 or self.batch_size < 1 or self.afs_pairs < 1:
            raise ValueError("epochs, batch_size and afs_pairs must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.kind not in (None, "object", "texture"):
            raise ValueError(f"kind must be object or texture, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The reference's schedule (a GPU run: 1000 epochs at 256 px on WideResNet50).
REALNET_PAPER = RealNetTrainConfig()
#: CPU demo recipe: pretrained EfficientNet-Lite0, 20 epochs of batch 8 at learning rate 1e-3 (ten times the
#: reference's, for a run of minutes rather than 1000 epochs); ``edge-ad demo`` runs it at 128 px
#: (:data:`DEMO_IMAGE_SIZE`). Demo brushed_metal, seed 0, shared 2-core AMD EPYC (2026-12-07): 52 s in all with
#: OMP_NUM_THREADS=1, image / pixel AUROC 1.0000 / 0.9903; the same with OMP_NUM_THREADS=2 while other jobs held
#: the cores took 1239 s (thread contention), 1.0000 / 0.9891. 224 px not measured to the end.
REALNET_CPU_DEMO = dataclasses.replace(REALNET_PAPER, epochs=20, batch_size=8, lr=1e-3, afs_pairs=32)
DEMO_IMAGE_SIZE, DEMO_RESIZE = 128, 146
PRESETS: dict[str, RealNetTrainConfig] = {"paper": REALNET_PAPER, "cpu-demo": REALNET_CPU_DEMO}


@dataclass
class RealNetEpoch:
    epoch: int
    loss: float
    recon: float
    seg: float
    seconds: float
    synthetic_image_auroc: float | None = None
    synthetic_pixel_auroc: float | None = None


def _mask_target(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x H x W masks -> N x h x w class labels: a cell is anomalous when at least half its pixels are."""
    return (F.adaptive_avg_pool2d(masks.float().unsqueeze(1), size)[:, 0] >= 0.5).long()


class _Batches:
    """Normalised tensors of (anomalous images, their good originals, masks) for one batch of indices."""

    def __init__(self, mix: SourceMix, views: list[np.ndarray], preprocessing: Preprocessing, device: torch.device):
        self.mix, self.views, self.device, self.preprocessing = mix, views, device, preprocessing

    def tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x 3 -> the normalised N x 3 x H x W batch, by the one :meth:`Preprocessing.normalize`."""
        return torch.from_numpy(np.stack([self.preprocessing.normalize(im) for im in images])).to(self.device)

    def make(self, indices: list[int], seed: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        examples = [self.mix.example(i, example_rng(seed, b, j)) for j, i in enumerate(indices)]
        anomalous = self.tensor(np.stack([e.image for e in examples]))
        normal = self.tensor(np.stack([self.views[i] for i in indices]))
        masks = torch.from_numpy(np.stack([e.mask for e in examples]).astype(np.float32)).to(self.device)
        return anomalous, normal, masks


@torch.no_grad()
def compute_afs(model: RealNet, batches: _Batches, pairs: int, seed: int, batch_size: int = 8) -> list[list[int]]:
    """AFS: score every channel of every level on ``pairs`` anomalous examples (normal draws are skipped), keep the
    config's ``afs_keep`` lowest-loss channels per level, write them into the model's buffers; returns them."""
    scorers = [AfsScorer(g.channels) for g in model.gathers]
    anomalous_mix = SourceMix(batches.mix.images, list(zip(batches.mix.sources, batches.mix.weights, strict=True)), 0.0)
    source = _Batches(anomalous_mix, batches.views, batches.preprocessing, batches.device)
    n = len(batches.views)
    order = [i % n for i in range(pairs)]
    for b, start in enumerate(range(0, pairs, batch_size)):
        anomalous, normal, masks = source.make(order[start : start + batch_size], seed, b)
        for scorer, fa, fn in zip(scorers, model.features(anomalous), model.features(normal), strict=True):
            scorer.update(fa, fn, masks)
    chosen = []
    for gather, scorer, keep in zip(model.gathers, scorers, model.config.afs_keep, strict=True):
        idx = select_channels(scorer.losses(), keep)
        gather.indices.copy_(idx)
        chosen.append(idx.tolist())
    return chosen


class RealNetTrainer(EpochLoop):
    """Trains G_k, RRS's BatchNorm and the decoder (the backbone is frozen) with L_recon + L_seg."""

    progress_label = "train realnet"

    def __init__(
        self,
        model: RealNet,
        batches: _Batches,
        preprocessing: Preprocessing,
        cfg: RealNetTrainConfig,
        *,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        run_fingerprint: str = "",
        validation: EpochValidation | None = None,
    ) -> None:
        self.model = model.to(device)
        self.batches = batches
        self.preprocessing = preprocessing
        self.cfg = cfg
        self.device = torch.device(device)
        self.validation = validation or EpochValidation(None)
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        self.fingerprint = run_fingerprint
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=cfg.lr)
        self.start_epoch = 0
        self.history: list[RealNetEpoch] = []

    def save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        state = {
            "epoch": epoch,
            "fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": json.dumps([asdict(h) for h in self.history]),
            "selection": self.validation.state_dict(),
        }
        atomic_write_with(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def resume(self) -> bool:
        """Load the last checkpoint (AFS indices included) if there is one; refuse one of another run."""
        state = load_checkpoint(self.checkpoint_path, self.fingerprint, self.device)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [RealNetEpoch(**h) for h in json.loads(state["history"])]
        self.validation.load_state_dict(state.get("selection"))
        self.start_epoch = int(state["epoch"])
        return True

    def train_epoch(self, epoch: int) -> RealNetEpoch:
        cfg = self.cfg
        self.model.train()
        n = len(self.batches.views)
        order = torch.randperm(n, generator=seeded_generator(cfg.seed, epoch)).tolist()
        groups = [order[s : s + cfg.batch_size] for s in range(0, n, cfg.batch_size)]
        seed = cfg.seed * 1_000_003 + epoch
        t0 = time.perf_counter()
        sums = np.zeros(3)
        for b, indices in enumerate(groups):
            anomalous, normal, masks = self.batches.make(indices, seed, b)
            target = self.model.select(self.model.features(normal))
            selected, reconstructed, logits = self.model(anomalous)
            recon = sum(F.mse_loss(r, t) for r, t in zip(reconstructed, target, strict=True))
            seg = F.cross_entropy(logits, _mask_target(masks, logits.shape[-2:]))
            loss = recon + seg
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums += (loss.item(), float(recon.detach()), seg.item())
        mean = sums / max(len(groups), 1)
        return RealNetEpoch(epoch, float(mean[0]), float(mean[1]), float(mean[2]), time.perf_counter() - t0)

    def _postfix(self, stats: RealNetEpoch) -> dict[str, float]:
        return {"loss": stats.loss, "recon": stats.recon, "seg": stats.seg}

    def _trained_line(self) -> str | None:
        if not self.history:
            return None
        last = self.history[-1]
        return f"trained {self.cfg.epochs} epochs: loss {last.loss:.4f} (recon {last.recon:.4f}, seg {last.seg:.4f})"


def train_realnet_bundle(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    category: str | None = None,
    preprocessing: Preprocessing | None = None,
    model_cfg: RealNetConfig | None = None,
    train_cfg: RealNetTrainConfig | None = None,
    backbone_weights: str | None = None,
    random_backbone: bool = False,
    device: str = "cpu",
    resume: bool = False,
    keep_checkpoint: bool = False,
    on_epoch: OnEpoch | None = None,
) -> Path:
    """Train RealNet on the good images of one category and write a sealed bundle to ``out_dir``."""
    model_cfg = model_cfg or RealNetConfig()
    train_cfg = train_cfg or RealNetTrainConfig()
    bb = get_backbone(model_cfg.backbone)
    # the input normalisation is the backbone's: its weights were trained with it
    preprocessing = dataclasses.replace(preprocessing or Preprocessing(), mean=bb.mean, std=bb.std)
    run = start_run(
        data_dir, out_dir, category=category, preprocessing=preprocessing, train_cfg=train_cfg, device=device,
        resume=resume, keep_checkpoint=keep_checkpoint,
    )  # fmt: skip
    split = run.split
    paths, train_idx, hold_idx = split.paths, split.train_idx, split.hold_idx
    raw = [read_image(p) for p in paths]
    views = [preprocessing.geometry(raw[i]) for i in train_idx]
    background = object_background(views, split.category, train_cfg.kind)  # type: ignore[arg-type]
    nsa = params_for(split.category, train_cfg.kind) if train_cfg.nsa else None  # type: ignore[arg-type]
    mix = anomaly_mix(views, background=background, sdas=train_cfg.sdas, textures=train_cfg.textures, nsa=nsa)
    validation = run.validate(on_epoch, raw=[raw[i] for i in hold_idx])
    fingerprint = run_fingerprint(
        data=data_fingerprint(paths),
        preprocessing=preprocessing.to_dict(),
        model=model_cfg.to_dict(),
        train=train_cfg.to_dict(),
        backbone={"weights": backbone_weights, "random": random_backbone},
    )
    torch.manual_seed(train_cfg.seed)
    model = RealNet(model_cfg, image_size=preprocessing.image_size)
    backbone_record = setup_backbone(model, BackboneSpec(weights=backbone_weights, random=random_backbone))  # type: ignore[arg-type]
    model.to(device)
    batches = _Batches(mix, views, preprocessing, torch.device(device))
    trainer = RealNetTrainer(
        model, batches, preprocessing, train_cfg, device=device, checkpoint_dir=run.checkpoint_dir,
        run_fingerprint=fingerprint, validation=validation,
    )  # fmt: skip
    if resume and trainer.resume():
        console.log(f"resumed from epoch {trainer.start_epoch} (AFS indices from the checkpoint)")
    else:
        chosen = compute_afs(model, batches, train_cfg.afs_pairs, train_cfg.seed)
        console.log(f"AFS kept {[len(c) for c in chosen]} channels of levels {list(model_cfg.layers)}")
    history = trainer.fit()
    return finish_bundle(
        model,
        run,
        image=lambda i: preprocessing(raw[i]),
        history=history,
        backbone=backbone_record,
        training_extra={
            "afs_indices": [g.indices.tolist() for g in model.gathers],
            "afs_keep": list(model_cfg.afs_keep),
            "rrs_k": model_cfg.rrs_k,
        },
    )
