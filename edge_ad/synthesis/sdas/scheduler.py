"""The SDAS sampler: diffusers' DDPM step with every reverse step's variance multiplied by (1 + s).

Why a subclass of ``DDPMScheduler`` and no copy of its step: the only change SDAS makes is the variance, and
``DDPMScheduler.step`` reads it from ``_get_variance`` alone. With ``variance_type="learned_range"`` that returns the
log-variance ``frac log(beta_t) + (1 - frac) log(beta~_t)``; adding ``log1p(s)`` gives
``x'_{t-1} ~ N(mu, (1 + s) Sigma)``. ``s = 0`` adds exactly 0.0, so the sampler is bit-identical to the library's.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler

from edge_ad.synthesis.sdas.presets import SdasConfig

__all__ = ["StrengthDDPMScheduler", "make_scheduler"]

Strength = float | torch.Tensor


class StrengthDDPMScheduler(DDPMScheduler):
    """``DDPMScheduler`` whose sampling variance is ``(1 + strength) Sigma``.

    ``strength`` is a float, or a tensor broadcastable to the sample (``N x 1 x 1 x 1``: one strength per image).
    """

    strength: Strength = 0.0

    def set_strength(self, strength: Strength) -> None:
        """Strength of the following ``step`` calls (>= 0)."""
        low = float(strength.min()) if isinstance(strength, torch.Tensor) else float(strength)
        if not low >= 0.0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.strength = strength

    def _get_variance(self, t, predicted_variance=None, variance_type=None):  # type: ignore[no-untyped-def]
        variance = super()._get_variance(t, predicted_variance=predicted_variance, variance_type=variance_type)
        s = self.strength
        kind = variance_type or self.config.variance_type
        if kind == "learned_range":  # a log-variance
            return variance + (torch.log1p(s) if isinstance(s, torch.Tensor) else math.log1p(s))
        if kind == "fixed_small_log":  # a standard deviation
            return variance * (torch.sqrt(1 + s) if isinstance(s, torch.Tensor) else math.sqrt(1 + s))
        if kind in ("fixed_small", "fixed_large", "learned"):  # a variance
            return variance * (1 + s)
        raise ValueError(f"SDAS strength is not defined for variance_type {kind!r}")


def make_scheduler(config: SdasConfig) -> StrengthDDPMScheduler:
    """The training and sampling schedule of ``config``: learned-range variance (or the fixed posterior variance
    without ``learn_sigma``), x0 clipped when sampling, and evenly spaced respacing that keeps both ends (t = T-1
    and 0), as guided-diffusion's ``space_timesteps``."""
    return StrengthDDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        variance_type="learned_range" if config.learn_sigma else "fixed_small",
        timestep_spacing="linspace",
    )
