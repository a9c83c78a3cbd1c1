"""SimpleNet training on cached frozen features, with atomic per-epoch checkpoints and exact resume.

Every source of randomness (holdout split, image order, noise) comes from generators seeded by
``(seed, epoch)``, so a run killed after epoch k and resumed gives the same weights as an uninterrupted one.
Nothing but the cosine schedule depends on the total number of epochs, so a resumed run may also ask for more
epochs than the checkpoint's run did: it trains on and equals an uninterrupted run of the new length.
Synthetic validation (:mod:`edge_ad.training.epoch_validation`) runs in eval mode on its own seeded set and draws
from none of these generators; with ``select="synthetic"`` the best epoch's weights travel in the checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from edge_ad.io import atomic_write_with
from edge_ad.models.simplenet.model import SimpleNet
from edge_ad.models.simplenet.validation import CachedLayerScorer
from edge_ad.synthesis.validation import ValidationScores, ValidationSet
from edge_ad.thresholds.rules import DEFAULT_SIGMAS
from edge_ad.training.checkpoints import CHECKPOINT_NAME, load_checkpoint, seeded_generator
from edge_ad.training.epoch_loop import EpochLoop
from edge_ad.training.epoch_validation import EpochValidation, check_validation_settings


@dataclass
class TrainConfig:
    """Optimisation constants; defaults are the paper's (SIMPLENET_SPEC sections 3-7)."""

    epochs: int = 160
    batch_size: int = 8  # images per step; all their positions form one batch of feature vectors
    adapter_lr: float = 1e-4
    adapter_weight_decay: float = 0.01
    disc_lr: float = 2e-4
    disc_weight_decay: float = 1e-5
    margin: float = 0.5  # th of the truncated L1 loss
    cosine_schedule: bool = False
    seed: int = 0
    holdout_fraction: float = 0.1  # share of train/good kept out to set the threshold
    min_holdout: int = 2
    threshold_sigmas: float = DEFAULT_SIGMAS  # threshold = mean + k * std of held-out good image scores
    synthetic_per_image: int = 3  # NSA anomalies per held-out good image for synthetic validation (0: off)
    validate_every: int = 1  # epochs between synthetic validations (the frozen backbone's maps are cached)
    select: str = "final"  # final | synthetic (the epoch with the best mean synthetic image/pixel AUROC)
    kind: str | None = None  # object | texture: NSA anomalies for a category outside the NSA table
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_validation_settings(self.select, self.synthetic_per_image, self.validate_every)
        if self.kind not in (None, "object", "texture"):
            raise ValueError(f"kind must be object or texture, got {self.kind!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochStats:
    epoch: int
    loss: float
    p_true: float
    p_fake: float
    seconds: float
    synthetic_image_auroc: float | None = None
    synthetic_pixel_auroc: float | None = None


def add_feature_noise(features: Tensor, std: float, mix: int, generator: torch.Generator) -> Tensor:
    """The paper's anomaly feature generator: f + eps, eps ~ N(0, (std * 1.1^k)^2), k uniform in [0, mix)."""
    noise = torch.randn(features.shape, generator=generator).to(features.device, features.dtype)
    if mix > 1:
        k = torch.randint(0, mix, (features.shape[0], 1), generator=generator).to(features.device)
        noise = noise * (std * 1.1 ** k.to(features.dtype))
    else:
        noise = noise * std
    return features + noise


def truncated_l1(true_scores: Tensor, fake_scores: Tensor, margin: float) -> Tensor:
    """mean(max(0, th - D(true))) + mean(max(0, th + D(fake)))."""
    return (margin - true_scores).clamp(min=0).mean() + (margin + fake_scores).clamp(min=0).mean()


class Trainer(EpochLoop):
    """Trains the adapter and discriminator of a SimpleNet on a [N, h*w, D] feature cache."""

    def __init__(
        self,
        model: SimpleNet,
        features: Tensor,
        cfg: TrainConfig,
        *,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        run_fingerprint: str = "",
        validation: EpochValidation | None = None,
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        """``validation`` (with ``normalize``, the preprocessing's, for its images): synthetic validation per epoch,
        selection and the ``on_epoch`` hook; without it, none."""
        self.model = model.to(device)
        self.features = features
        self.validation = validation or EpochValidation(None)
        self.normalize = normalize
        self._scorer: CachedLayerScorer | None = None
        self.cfg = cfg
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        self.fingerprint = run_fingerprint
        self.adapter_opt = torch.optim.AdamW(
            model.adapter.parameters(), lr=cfg.adapter_lr, weight_decay=cfg.adapter_weight_decay
        )
        self.disc_opt = torch.optim.Adam(
            model.discriminator.parameters(), lr=cfg.disc_lr, weight_decay=cfg.disc_weight_decay
        )
        self.start_epoch = 0
        self.history: list[EpochStats] = []

    # -- checkpoints ---------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "epochs_planned": self.cfg.epochs,
            "fingerprint": self.fingerprint,
            "adapter": self.model.adapter.state_dict(),
            "discriminator": self.model.discriminator.state_dict(),
            "adapter_opt": self.adapter_opt.state_dict(),
            "disc_opt": self.disc_opt.state_dict(),
            "history": json.dumps([asdict(h) for h in self.history]),
            "selection": self.validation.state_dict(),
        }

    def save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        state = self._state(epoch)
        atomic_write_with(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; refuse one written for other data or settings.

        The number of epochs may grow (train on from the checkpoint) or stay (nothing left to train); fewer
        epochs than the checkpoint holds, or more under a cosine schedule (whose learning rates depend on the
        total), are refused.
        """
        state = load_checkpoint(self.checkpoint_path, self.fingerprint, self.device)
        if state is None:
            return False
        self._check_epochs(int(state["epoch"]), int(state.get("epochs_planned", state["epoch"])))
        self.model.adapter.load_state_dict(state["adapter"])
        self.model.discriminator.load_state_dict(state["discriminator"])
        self.adapter_opt.load_state_dict(state["adapter_opt"])
        self.disc_opt.load_state_dict(state["disc_opt"])
        self.history = [EpochStats(**h) for h in json.loads(state["history"])]
        self.validation.load_state_dict(state.get("selection"))
        self.start_epoch = int(state["epoch"])
        return True

    def _check_epochs(self, done: int, planned: int) -> None:
        wanted = self.cfg.epochs
        if wanted < done:
            raise ValueError(
                f"{self.checkpoint_path} already holds {done} epochs, more than --epochs {wanted}: "
                f"pass --epochs {done} or more to resume it, or use another --out to start afresh"
            )
        if self.cfg.cosine_schedule and wanted != planned:
            raise ValueError(
                f"{self.checkpoint_path} was trained with a cosine schedule over {planned} epochs; the learning "
                f"rates of its {done} epochs depend on that total, so --epochs {wanted} cannot continue it exactly: "
                f"resume with --epochs {planned}, or start afresh"
            )

    # -- training ------------------------------------------------------------------------------------
    def _set_lr(self, epoch: int) -> None:
        if not self.cfg.cosine_schedule:
            return
        factor = 0.5 * (1 + math.cos(math.pi * epoch / self.cfg.epochs))
        for opt, base in ((self.adapter_opt, self.cfg.adapter_lr), (self.disc_opt, self.cfg.disc_lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def train_epoch(self, epoch: int, on_step: Callable[[], None] | None = None) -> EpochStats:
        cfg, mcfg = self.cfg, self.model.config
        self.model.train()
        self._set_lr(epoch)
        gen = seeded_generator(cfg.seed, epoch)
        order = torch.randperm(self.features.shape[0], generator=gen)
        t0 = time.perf_counter()
        loss_sum = p_true_sum = p_fake_sum = 0.0
        steps = 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            feats = self.features[idx].to(self.device, torch.float32).flatten(0, 1)
            true = self.model.adapter(feats)
            fake = add_feature_noise(true, mcfg.noise_std, mcfg.mix_noise, gen)
            scores = self.model.discriminator(torch.cat([true, fake]))
            s_true, s_fake = scores[: len(true)], scores[len(true) :]
            loss = truncated_l1(s_true, s_fake, cfg.margin)
            self.adapter_opt.zero_grad(set_to_none=True)
            self.disc_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.adapter_opt.step()
            self.disc_opt.step()
            with torch.no_grad():
                loss_sum += loss.item()
                p_true_sum += (s_true >= cfg.margin).float().mean().item()
                p_fake_sum += (s_fake < -cfg.margin).float().mean().item()
            steps += 1
            if on_step:
                on_step()
        return EpochStats(epoch, loss_sum / steps, p_true_sum / steps, p_fake_sum / steps, time.perf_counter() - t0)

    # -- validation ----------------------------------------------------------------------------------
    def _weights(self) -> dict[str, Tensor]:
        """The trained part (adapter and discriminator); the frozen trunk never changes."""
        return {k: v for k, v in self.model.state_dict().items() if k.startswith(("adapter.", "discriminator."))}

    def _load_weights(self, weights: dict[str, Tensor]) -> None:
        for name in ("adapter", "discriminator"):
            prefix = name + "."
            part = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            getattr(self.model, name).load_state_dict(part)

    def _score_validation(self, vset: ValidationSet) -> ValidationScores:
        if self._scorer is None:
            if self.normalize is None:
                raise ValueError("synthetic validation needs the preprocessing's normalize")
            self._scorer = CachedLayerScorer(self.model, vset, self.normalize, device=self.device)
        center = None
        if self.model.config.score_mode == "two_sided":
            # the final centre (median D over all training positions) is fixed after training; per epoch, the
            # median over the first few cached training images stands in for it
            feats = self.features[:4].to(self.device, torch.float32).flatten(0, 1)
            center = float(self.model.discriminate(feats).median())
        return self._scorer(vset, score_center=center)

    def _postfix(self, stats: EpochStats) -> dict[str, float]:
        return {"loss": stats.loss, "p_true": stats.p_true, "p_fake": stats.p_fake}

    def _trained_line(self) -> str | None:
        if not self.history or self.features.shape[0] == 0:  # no training positions: no steps were taken
            return None
        last = self.history[-1]
        figures = f"loss {last.loss:.4f} p_true {last.p_true:.3f} p_fake {last.p_fake:.3f}"
        return f"trained {self.cfg.epochs} epochs: {figures}"

    @torch.no_grad()
    def discriminator_logits(self, chunk: int = 8) -> Tensor:
        """D(G(f)) for every cached training position (eval-mode BatchNorm)."""
        self.model.eval()
        out = []
        for start in range(0, self.features.shape[0], chunk):
            feats = self.features[start : start + chunk].to(self.device, torch.float32).flatten(0, 1)
            out.append(self.model.discriminate(feats).cpu())
        return torch.cat(out)
