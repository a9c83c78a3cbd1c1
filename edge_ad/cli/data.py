"""``edge-ad demo-data`` and ``edge-ad synth``: the commands that write datasets rather than read them.

Why a module of its own: cli.py holds every other command's options and would pass 500 lines with these in it.
The functions are registered on the app in cli.py, in the order ``--help`` lists them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edge_ad.cli.output import UserError, err, friendly, out

__all__ = ["demo_data", "synth"]


@friendly
def demo_data(
    root: Path = typer.Argument(..., help="Folder to write the MVTec-layout demo dataset into."),
    category: list[str] = typer.Option(None, "--category", "-c", help="Categories (default: all)."),
    seed: int = typer.Option(0, help="Same seed, same images."),
    n_train: int = typer.Option(None, help="Good training images per category (default: 60 procedural, 40 photos)."),
    source: str = typer.Option(
        "procedural", help="procedural, or photos: crops of real photographs shipped by scikit-image, written as "
        "ROOT/tune/<category> and ROOT/report/<category> (pip install 'edge-ad\\[photos]')."
    ),
) -> None:
    """Generate a demo dataset: procedural textures and parts, or real photographs, with defects and masks."""
    if source == "photos":
        from rich.markup import escape

        from edge_ad.datasets.photos import PhotosUnavailable, make_photo_dataset

        try:
            folders = make_photo_dataset(root, category or None, seed=seed, n_train=40 if n_train is None else n_train)
        except PhotosUnavailable as exc:  # its message names an extra in brackets, which rich would eat as markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    elif source == "procedural":
        from edge_ad.datasets.demo import make_demo_dataset

        folders = make_demo_dataset(root, category or None, seed=seed, n_train=60 if n_train is None else n_train)
    else:
        raise UserError(f"--source must be procedural or photos, got {source!r}")
    for folder in folders:
        out.print(f"wrote {folder}")


@friendly
def synth(
    data: Path = typer.Argument(..., help="MVTec AD root, a category folder, or a folder of good images."),
    category: str = typer.Option(None, "--category", help="Category under DATA (MVTec layout)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Writes OUT/<category>/test/synthetic and ground_truth."),
    count: int = typer.Option(16, "-n", "--count", help="Examples to write."),
    seed: int = typer.Option(0, help="Same seed, same examples."),
    label: str = typer.Option(
        "binary", help="binary, continuous or logistic (16-bit PNG beside the mask; logistic: the paper's best)."
    ),
    kind: str = typer.Option(None, help="object or texture: needed for a category NSA's table does not know."),
    background: str = typer.Option(
        None, help="Object's background: auto (from the good images), none, or LEVEL,THRESHOLD (default: category's)."
    ),
    workers: int = typer.Option(0, help="Worker processes (0: this one)."),
    blend: str = typer.Option(
        "auto", help="Poisson blending: auto (the reference's: normal for objects, mixed for textures), normal, mixed."
    ),
) -> None:
    """Write NSA synthetic anomalies (patches of other good images, Poisson-blended) with masks, to look at."""
    from edge_ad.datasets.synthetic import write_synthetic
    from edge_ad.synthesis.params import parse_background

    extra = {} if background is None else {"background": parse_background(background)}
    report = write_synthetic(
        data, out_dir, count, category=category, seed=seed, label=label, kind=kind, workers=workers, blend=blend,
        **extra
    )
    if report.empty:
        err.print(f"[yellow]warning:[/] {report.empty} of {report.count} examples got no patch (empty mask)")
    out.print(f"wrote {report.count} synthetic examples to {report.category_dir}; preview: {report.preview}")
