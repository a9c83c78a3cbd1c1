"""SDAS (RealNet's strength-controllable diffusion anomaly synthesis): a DDPM of a category's good images whose
sampler widens every reverse step's variance by (1 + s), so samples drift off the good-image distribution by an
amount the strength s sets.

Built on ``diffusers`` (``UNet2DModel`` + ``DDPMScheduler`` with learned variance), an optional extra: this package's
``__init__`` imports neither torch nor diffusers, so the rest of :mod:`edge_ad.synthesis` stays torch-free.
Modules: :mod:`.presets` (sizes and schedules), :mod:`.extra` (the missing-extra message), :mod:`.scheduler` (the
strength rule), :mod:`.loss` (the hybrid loss), :mod:`.model` (build, save, load), :mod:`.train`, :mod:`.sample`.
"""

from edge_ad.synthesis.sdas.extra import SDAS_INSTALL, SdasUnavailable, require_diffusers
from edge_ad.synthesis.sdas.presets import PRESETS, SdasConfig, preset

__all__ = ["PRESETS", "SDAS_INSTALL", "SdasConfig", "SdasUnavailable", "preset", "require_diffusers"]
