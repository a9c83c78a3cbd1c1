"""Turn a checkpoint trained with the SimpleNet authors' code into an edge-ad bundle.

Their ``ckpt.pth`` holds two state dicts: ``discriminator`` (``body.block1.{0,1}.*`` = Linear + BatchNorm1d,
``tail.weight``) and, when trained with ``--pre_proj 1``, ``pre_projection`` (``layers.0fc.*``). The backbone is
not in it: the user names the WideResNet50-2 weights they trained with. Loading uses
``torch.load(weights_only=True)``: no arbitrary unpickling.

BatchNorm drift: the authors' ``SimpleNet.load()`` calls ``NetworkFeatureAggregator.feature_dimensions()``,
which runs ``torch.ones(1, 3, S, S)`` (S = their crop size) through the freshly built torchvision backbone while
it is still in train mode. Their hook's early stop is commented out, so the whole backbone runs (layer4 and fc
too), and every BatchNorm's running statistics move once with momentum 0.1 before training starts; their
checkpoint was trained and scored with that backbone. The import repeats it (:func:`apply_authors_bn_drift`)
unless told not to. edge-ad's trunk stops at layer3, so layer4's statistics (unused by SimpleNet) are not there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edge_ad.data.images import list_images, read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.backbones.wide_resnet import (
    WideResNet50Trunk,
    load_backbone_weights,
    read_state_dict,
    state_dict_sha256,
)
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.runtimes.scoring import score_batches
from edge_ad.runtimes.torch_runtime import TorchRuntime
from edge_ad.thresholds.rules import good_statistics
from edge_ad.training.finish import save_model

DISCRIMINATOR_KEYS = {
    "body.block1.0.weight": "fc1.weight",
    "body.block1.0.bias": "fc1.bias",
    "body.block1.1.weight": "bn.weight",
    "body.block1.1.bias": "bn.bias",
    "body.block1.1.running_mean": "bn.running_mean",
    "body.block1.1.running_var": "bn.running_var",
    "body.block1.1.num_batches_tracked": "bn.num_batches_tracked",
    "tail.weight": "fc2.weight",
}


AUTHORS_BN_MOMENTUM = 0.1  # torch's BatchNorm default, which torchvision's WideResNet50-2 keeps


def default_resize(image_size: int) -> int:
    """Shorter side before the crop, in the authors' proportion 256/224: 224 -> 256 and 288 -> 329 as they pair them."""
    return round(image_size * 256 / 224)


@torch.no_grad()
def apply_authors_bn_drift(trunk: WideResNet50Trunk, size: int) -> dict[str, object]:
    """One train-mode forward of ``torch.ones(1, 3, size, size)``, as the authors' ``feature_dimensions()`` does.

    Every BatchNorm up to layer3 takes one momentum-0.1 step towards the statistics of that input (and counts the
    batch). Returns what the bundle records as ``backbone.bn_drift``.
    """
    bns = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    odd = sorted({m.momentum for m in bns} - {AUTHORS_BN_MOMENTUM}, key=str)
    if odd:
        raise ValueError(f"backbone BatchNorm momentum {odd} is not the authors' {AUTHORS_BN_MOMENTUM}")
    was_training = trunk.training
    trunk.train()
    try:
        trunk(torch.ones(1, 3, size, size, device=next(trunk.parameters()).device))
    finally:
        trunk.train(was_training)
    return {"input": "ones", "size": int(size), "momentum": AUTHORS_BN_MOMENTUM}


class CheckpointError(ValueError):
    """An authors' checkpoint that edge-ad cannot map onto its SimpleNet."""


def read_authors_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise CheckpointError(f"cannot read {path} as a SimpleNet checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "discriminator" not in state:
        raise CheckpointError(f"{path} has no 'discriminator' state dict: not a SimpleNet ckpt.pth")
    return state


def convert(state: dict[str, dict[str, torch.Tensor]], model: SimpleNet) -> None:
    """Copy the authors' discriminator and projection into ``model`` (shapes checked)."""
    disc = state["discriminator"]
    unknown = set(disc) - set(DISCRIMINATOR_KEYS)
    if unknown:
        raise CheckpointError(
            f"discriminator has layers edge-ad does not model ({sorted(unknown)[:3]}); only dsc_layers=2 is supported"
        )
    mapped = {DISCRIMINATOR_KEYS[k]: v for k, v in disc.items()}
    try:
        model.discriminator.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"discriminator does not fit (dsc_hidden 1024, 1536 features expected): {exc}") from exc
    proj = state.get("pre_projection")
    if proj is None:
        # trained without the adapter (pre_proj 0): identity adapter keeps the scores identical
        with torch.no_grad():
            model.adapter.weight.copy_(torch.eye(model.adapter.weight.shape[0]))
            if model.adapter.bias is not None:
                model.adapter.bias.zero_()
        return
    if set(proj) - {"layers.0fc.weight", "layers.0fc.bias"}:
        raise CheckpointError("pre_projection with more than one layer is not supported (pre_proj must be 1)")
    model.adapter.load_state_dict({"weight": proj["layers.0fc.weight"], "bias": proj["layers.0fc.bias"]})


def import_checkpoint(
    ckpt: str | Path,
    backbone_weights: str | Path,
    out_dir: str | Path,
    *,
    image_size: int = 288,
    resize: int | None | str = "auto",
    good_images: str | Path | None = None,
    threshold_sigmas: float = 3.0,
    bn_drift: bool = True,
) -> Path:
    """Write a bundle from the authors' checkpoint; ``good_images`` (optional) sets the verdict threshold.

    ``resize``: "auto" follows ``image_size`` (:func:`default_resize`), None resizes straight to ``image_size``.
    ``bn_drift``: repeat the authors' accidental BatchNorm update (module docstring) so their scores are
    reproduced; off, the backbone keeps the weights file's statistics. Without ``good_images`` the bundle has no
    threshold (stored as null).
    """
    if resize == "auto":
        resize = default_resize(image_size)
    preprocessing = Preprocessing(image_size=image_size, resize=resize)  # bad geometry fails before any loading
    state = read_authors_checkpoint(ckpt)
    has_bias = "pre_projection" in state
    model = SimpleNet(SimpleNetConfig(adapter_bias=True, score_mode="negative"), image_size=image_size)
    load_backbone_weights(model.backbone, read_state_dict(backbone_weights), source=str(backbone_weights))
    backbone_info: dict = {"weights": Path(backbone_weights).name}
    if bn_drift:
        backbone_info["bn_drift"] = apply_authors_bn_drift(model.backbone, image_size)
    backbone_info["sha256"] = state_dict_sha256(model.backbone)
    convert(state, model)
    model.eval()
    score_stats: dict = {"threshold_source": "none given (pass --good-images to set one)"}
    threshold: float | None = None
    if good_images is not None:
        paths = list_images(good_images)
        scores, maps = score_batches(
            TorchRuntime(model).predict,
            paths,
            lambda chunk: preprocessing.batch([read_image(p) for p in chunk]),
            read_ahead=1,
        )
        score_stats = good_statistics(scores, maps, threshold_sigmas)
        score_stats["threshold_source"] = f"{len(paths)} good images in {good_images}"
        threshold = score_stats["image"]["threshold"]
    save_model(
        model,
        out_dir,
        preprocessing=preprocessing,
        threshold=threshold,
        score_stats=score_stats,
        backbone=backbone_info,
        training={
            "imported_from": str(Path(ckpt).resolve()),
            "pre_projection": has_bias,
            "selection": "as trained by the authors",
        },
    )
    return Path(out_dir)
