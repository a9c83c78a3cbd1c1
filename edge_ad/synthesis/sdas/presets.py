"""SDAS recipes: the network's shape, the diffusion schedule and the training schedule, kept in the model's JSON.

Why a dataclass and no diffusers config: the model folder is rebuilt from these fields alone, so a saved model
never depends on a library's private config keys. Torch-free.

- ``paper``: the reference's network at 256 px (guided-diffusion's ImageNet-256 UNet: 256 base channels,
  multipliers 1,1,2,2,4,4, 2 residual blocks per stage, attention at 32/16/8 px, scale-shift normalisation,
  learned sigma), T = 1000 linear betas, 20 respaced sampling steps. A desktop-GPU job. The reference fine-tunes an
  ImageNet diffusion checkpoint; none can be downloaded here, so this trains from scratch (its batch, learning rate,
  EMA and step count are this project's choices, not the reference's).
- ``cpu``: 48 px, widths 32/64/64, one residual block per stage, attention at 12 px only (1.1 M parameters), 600
  steps of 8 images: about 10 minutes on 2 busy cores (1.1 s a step with one torch thread, which was faster than
  two on a loaded machine; a quiet one is several times faster). Its variance is the fixed posterior variance
  (DDPM's ``fixed_small``), widened by (1 + s) the same way: in 600 steps the learned variance had not learned
  anything (v the same at every t), and its samples kept heavy pixel noise that the fixed variance does not leave.
  It can learn the category's layout and colours (where the part sits, its outline, the background's tone); it
  cannot make fine texture (machining marks, weave, grain) at 48 px, and its samples are upsampled to the images
  they are blended into, so they are soft.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["PRESETS", "SdasConfig", "preset"]


@dataclass(frozen=True)
class SdasConfig:
    """Everything that defines an SDAS model and its training run (saved beside the weights as JSON)."""

    image_size: int = 48
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (2,)  # indices into block_out_channels (here 12 px)
    attention_head_dim: int = 32
    scale_shift: bool = False  # guided-diffusion's use_scale_shift_norm
    learn_sigma: bool = False  # learned-range variance (the paper's); False: the fixed posterior variance
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    sample_steps: int = 20
    batch_size: int = 8
    learning_rate: float = 3e-4
    train_steps: int = 600
    ema_rate: float = 0.995
    checkpoint_every: int = 200
    hflip: bool = False  # mirror training images (only where a mirrored part is still a good part)

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if self.image_size < 8 or self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {self.image_size} must be >= 8 and divisible by {2 ** (levels - 1)}")
        if levels < 1 or any(c < 1 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels must be positive, got {self.block_out_channels}")
        if any(not 0 <= i < levels for i in self.attention_levels):
            raise ValueError(f"attention_levels must index block_out_channels, got {self.attention_levels}")
        positive = ("layers_per_block", "num_train_timesteps", "sample_steps", "batch_size", "train_steps")
        for name in (*positive, "checkpoint_every", "attention_head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps {self.sample_steps} exceeds num_train_timesteps {self.num_train_timesteps}")
        if not 0.0 <= self.ema_rate < 1.0 or not self.learning_rate > 0:
            raise ValueError(f"need 0 <= ema_rate < 1 and learning_rate > 0, got {self.ema_rate}, {self.learning_rate}")
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}")

    def replace(self, **changes: Any) -> SdasConfig:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SdasConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SDAS config keys: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, SdasConfig] = {
    "cpu": SdasConfig(),
    "paper": SdasConfig(
        image_size=256,
        block_out_channels=(256, 256, 512, 512, 1024, 1024),
        layers_per_block=2,
        attention_levels=(3, 4, 5),  # 32, 16 and 8 px at 256 px input
        attention_head_dim=64,
        scale_shift=True,
        learn_sigma=True,
        batch_size=8,
        learning_rate=1e-4,
        train_steps=40_000,
        ema_rate=0.9999,
        checkpoint_every=2_000,
    ),
}


def preset(name: str) -> SdasConfig:
    """The named recipe; ValueError listing the names for an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown SDAS preset {name!r}; choose one of {', '.join(PRESETS)}") from None
