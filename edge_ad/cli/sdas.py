"""``edge-ad sdas train|sample``: RealNet's diffusion anomaly source as a typer sub-app (registered in cli.py).

Why its own module: the SDAS commands need torch and diffusers (the ``sdas`` extra), imported only when they run;
a missing extra ends in one line naming it and its pip line.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from edge_ad.cli.output import UserError, err, friendly, out

__all__ = ["sdas_app"]

sdas_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SDAS (RealNet): a diffusion model of good images whose samples, drawn with extra variance, are anomalies.",
)


def _require_extra() -> None:
    from edge_ad.synthesis.sdas import SdasUnavailable, require_diffusers

    try:
        require_diffusers()
    except SdasUnavailable as exc:  # the message names an extra in brackets, which rich would eat as markup
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device")
    return device


@sdas_app.command("train")
@friendly
def train(
    data: Path = typer.Argument(..., help="MVTec AD root, a category folder, or a folder of good images."),
    category: str = typer.Option(None, "--category", help="Category under DATA (MVTec layout)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model folder to write (sdas.json + sdas.safetensors)."),
    preset_name: str = typer.Option(
        "cpu", "--preset", help="cpu (48 px, minutes on 2 cores, coarse) or paper (256 px, the reference's UNet; GPU)."
    ),
    steps: int = typer.Option(None, help="Training steps (default: the preset's)."),
    batch_size: int = typer.Option(None, help="Images per step (default: the preset's)."),
    hflip: bool = typer.Option(False, help="Mirror training images (only where a mirrored part is a good part)."),
    seed: int = typer.Option(0),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Train an SDAS model on a category's good images; checkpoints rewrite the model folder as it goes."""
    _require_extra()
    from edge_ad.synthesis.sdas import preset
    from edge_ad.synthesis.sdas.train import load_good_images, train_sdas

    config = preset(preset_name)
    changes = {"train_steps": steps, "batch_size": batch_size}
    config = config.replace(hflip=hflip, **{k: v for k, v in changes.items() if v is not None})
    run_on = _device(device)
    folder, images = load_good_images(data, category)
    info = {"category": folder.name, "data": str(folder), "preset": preset_name}
    summary = train_sdas(images, config, out_dir, seed=seed, device=run_on, info=info)
    out.print(
        f"wrote {summary['model']} ({summary['steps']} steps, final mse {summary['mse']:.4f}, vb {summary['vb']:.4f})"
    )


@sdas_app.command("sample")
@friendly
def sample(
    model: Path = typer.Argument(..., help="SDAS model folder (from `edge-ad sdas train`)."),
    count: int = typer.Option(16, "-n", "--count", help="Images to write."),
    strength: str = typer.Option("0.1:0.2", help="Anomaly strength s, or LOW:HIGH drawn uniformly per image."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for sdas_NNNN.png and samples.json."),
    steps: int = typer.Option(None, help="Respaced sampling steps (default: the model's, 20)."),
    batch_size: int = typer.Option(8, help="Images sampled together."),
    seed: int = typer.Option(0, help="Same seed, same images."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Sample SDAS images: the P images a RealNet blend pastes (give the folder to training as its source)."""
    _require_extra()
    from edge_ad.synthesis.sdas.sample import parse_strength, write_samples

    low_high = parse_strength(strength)
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    paths = write_samples(
        model, count, low_high, out_dir, seed=seed, batch_size=batch_size, steps=steps, device=_device(device)
    )
    out.print(f"wrote {len(paths)} samples (strength {low_high[0]:g}..{low_high[1]:g}) to {out_dir}")
