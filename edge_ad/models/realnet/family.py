"""RealNet's :class:`~edge_ad.models.family.Family` record: how it is built, trained and demonstrated.

Torch-free to import; each callable imports the model and trainer when it runs. Its ``--backbone``, ``--layers``,
``--backbone-weights`` and ``--random-backbone`` are :data:`~edge_ad.models.family.BACKBONE_OPTIONS`, as
SimpleNet's; ``--textures`` and ``--anomalies`` (alias ``--sdas``) pick the anomaly sources of
:func:`edge_ad.synthesis.sources.anomaly_mix`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edge_ad.models.family import BACKBONE_OPTIONS, DEMO_HOLDOUT, AnomalyModel, DemoRecipe, Family, TrainOption
from edge_ad.postprocess.image_score import HeadDeclaration

__all__ = ["FAMILY"]

#: ``edge-ad demo --model realnet``'s epochs (the CPU recipe REALNET_CPU_DEMO's).
CPU_DEMO_EPOCHS = 20
#: The graph's smoothing sigma (RealNetConfig's default), declared with the image score.
SMOOTHING_SIGMA = 4.0


def build(info: Any) -> AnomalyModel:
    """The model a bundle's config describes (weights, AFS indices included, not loaded)."""
    from edge_ad.models.realnet.model import RealNet, RealNetConfig

    return RealNet(RealNetConfig.from_dict(info.model), image_size=info.image_size)


def anomaly_folders(options: dict[str, Any]) -> dict[str, str | None]:
    """``--textures`` and ``--anomalies``/``--sdas`` as the train config's ``textures`` and ``sdas`` folders, each
    checked before any data is read: a missing, non-folder or imageless folder is one ValueError naming the option."""
    from edge_ad.data.images import ImageError, list_images

    anomalies, sdas = options.get("anomalies"), options.get("sdas")
    if anomalies is not None and sdas is not None and Path(anomalies) != Path(sdas):
        raise ValueError("--anomalies and --sdas name the same folder (one is the other's alias); give one")
    folders = {
        "textures": ("--textures", options.get("textures")),
        "sdas": ("--sdas" if anomalies is None else "--anomalies", anomalies or sdas),
    }
    out: dict[str, str | None] = {}
    for key, (flag, folder) in folders.items():
        if folder is not None:
            try:
                found = list_images(folder)
            except ImageError as exc:
                raise ValueError(f"{flag}: {exc}") from None
            if not found:
                raise ValueError(f"{flag}: no images in {folder} (expected .png/.jpg/... files directly inside)")
            out[key] = str(folder)
    return out


def train(
    data: Path, out_dir: Path, preprocessing: Any, common: dict[str, Any], options: dict[str, Any], run: dict[str, Any]
) -> None:
    """``edge-ad train --model realnet``: pretrained EfficientNet-Lite0 unless told; ``--preset`` paper (default) or
    cpu-demo; the shared options and the anomaly folders on top."""
    from edge_ad.models.backbones import DEFAULT_BACKBONE
    from edge_ad.models.realnet.model import RealNetConfig
    from edge_ad.models.realnet.trainer import PRESETS, train_realnet_bundle

    name = options.get("preset") or "paper"
    if name not in PRESETS:
        raise ValueError(f"unknown --preset {name!r}; RealNet presets: {', '.join(PRESETS)}")
    weights, random_backbone = options.get("backbone_weights"), bool(options.get("random_backbone"))
    if weights is not None and random_backbone:
        raise ValueError("--backbone-weights and --random-backbone exclude each other")
    layers = tuple(x.strip() for x in (options.get("layers") or "").split(",") if x.strip())
    model_cfg = RealNetConfig(backbone=options.get("backbone") or DEFAULT_BACKBONE, layers=layers)
    given = {k: v for k, v in common.items() if v is not None} | anomaly_folders(options)
    train_cfg = dataclasses.replace(PRESETS[name], **given)  # re-runs the config's validation
    train_realnet_bundle(
        data, out_dir, preprocessing=preprocessing, model_cfg=model_cfg, train_cfg=train_cfg,
        backbone_weights=weights, random_backbone=random_backbone, **run,
    )  # fmt: skip


def demo_train(
    data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
) -> Path:
    """``edge-ad demo --model realnet``: the CPU recipe ``REALNET_CPU_DEMO`` on pretrained Lite0."""
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.realnet.model import RealNetConfig
    from edge_ad.models.realnet.trainer import DEMO_IMAGE_SIZE, DEMO_RESIZE, REALNET_CPU_DEMO, train_realnet_bundle

    return train_realnet_bundle(
        data,
        bundle,
        category=category,
        preprocessing=Preprocessing(image_size=DEMO_IMAGE_SIZE, resize=DEMO_RESIZE),
        model_cfg=RealNetConfig(),
        train_cfg=dataclasses.replace(REALNET_CPU_DEMO, epochs=epochs, seed=seed, holdout_fraction=DEMO_HOLDOUT),
        device=device,
        resume=resume,
        **extra,
    )


FAMILY = Family(
    name="realnet",
    title="RealNet",
    build=build,
    train=train,
    head=HeadDeclaration("max", SMOOTHING_SIGMA),
    options=(
        *BACKBONE_OPTIONS,
        TrainOption(
            "preset",
            str,
            "Recipe: paper (default: Adam 1e-4, batch 16, 1000 epochs; the paper trains at --image-size 256 "
            "--no-crop) or cpu-demo (see README).",
        ),
        TrainOption(
            "textures",
            str,
            "Folder of texture images (e.g. DTD) blended into good images under Perlin masks, opacity 0.2-1.0 "
            "(default: the category's own images, turned and mirrored).",
        ),
        TrainOption(
            "anomalies",
            str,
            "Folder of SDAS/SIA images (edge-ad sdas sample) blended under Perlin masks, opacity 0.5-1.0.",
        ),
        TrainOption("sdas", str, "Alias of --anomalies."),
    ),
    option_note="takes --backbone, --layers, --backbone-weights, --random-backbone, --preset, --textures, "
    "--anomalies and --sdas",
    demo=DemoRecipe(
        CPU_DEMO_EPOCHS,
        demo_train,
        "realnet-{category}",
        "RealNet on pretrained EfficientNet-Lite0 at 128 px, trained on synthetic anomalies, CPU recipe "
        "REALNET_CPU_DEMO",
    ),
)
