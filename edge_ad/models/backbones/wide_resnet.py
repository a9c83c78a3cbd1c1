"""WideResNet50-2 up to layer4, in plain torch with torchvision's parameter names.

torchvision cannot be installed CPU-only next to the torch wheel this project uses, so the trunk is written
here. Parameter names match ``torchvision.models.wide_resnet50_2`` exactly, so a user's ImageNet checkpoint
(torchvision ``.pth`` or safetensors) loads unchanged; keys the trunk does not build (fc, and layer4 unless a
layer4 level is asked for) are ignored.

The trunk is built up to its deepest requested level but never shorter than layer3: SimpleNet's layer2 + layer3
(and every bundle written while the trunk stopped at layer3) keep exactly the modules, parameter names and random
draws they had; layer4 (15 M parameters) exists only when a family asks for it (RealNet's paper levels layer1-4).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from edge_ad.io import atomic_path
from edge_ad.models.backbones.weights import (  # noqa: F401 - re-exported: callers import them from here
    BackboneWeightsError,
    load_state,
    read_state_dict,
    state_dict_sha256,
)

# torchvision's published ImageNet weights (the SimpleNet authors used IMAGENET1K_V1).
# The hex in the file name is the prefix of the file's SHA-256, which torchvision checks on download.
IMAGENET_WEIGHTS = {
    "imagenet1k_v1": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    "imagenet1k_v2": "https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth",
}

FEATURE_LAYERS = ("layer2", "layer3")
LAYER_CHANNELS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
LAYER_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
#: (planes, blocks, stride) of each stage: torchvision's wide_resnet50_2 (3, 4, 6, 3 bottlenecks).
STAGES = {"layer1": (64, 3, 1), "layer2": (128, 4, 2), "layer3": (256, 6, 2), "layer4": (512, 3, 2)}
#: The shallowest trunk ever built: the stage the trunk stopped at before layer4 existed.
MIN_STAGE = "layer3"


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv), width doubled."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes * 2  # wide_resnet50_2: width_per_group = 128 = 64 * 2
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _stages_for(out_layers: tuple[str, ...]) -> tuple[str, ...]:
    """The stages to build: layer1 up to the deepest requested one, at least up to :data:`MIN_STAGE`."""
    order = list(STAGES)
    deepest = max((order.index(name) for name in out_layers), default=0)
    return tuple(order[: max(deepest, order.index(MIN_STAGE)) + 1])


class WideResNet50Trunk(nn.Module):
    """Stem and layer1..layerN of WideResNet50-2 (N: the deepest requested level, at least 3); returns the requested
    layers' outputs in order."""

    def __init__(self, out_layers: Iterable[str] = FEATURE_LAYERS):
        super().__init__()
        self.out_layers = tuple(out_layers)
        unknown = set(self.out_layers) - set(LAYER_CHANNELS)
        if unknown:
            raise ValueError(f"unknown backbone layers {sorted(unknown)}; choose from {sorted(LAYER_CHANNELS)}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stages = _stages_for(self.out_layers)
        inplanes = 64
        for name in self.stages:
            planes, blocks, stride = STAGES[name]
            setattr(self, name, _make_layer(inplanes, planes, blocks, stride))
            inplanes = planes * Bottleneck.expansion
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation (Kaiming normal, fan_out), so random-backbone runs match it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs: dict[str, Tensor] = {}
        wanted = set(self.out_layers)
        for name in self.stages:
            if wanted and not wanted - outs.keys():  # nothing after the deepest requested layer is computed
                break
            x = getattr(self, name)(x)
            outs[name] = x
        return [outs[name] for name in self.out_layers]


RANDOM_INITS = ("isometric", "torchvision")
DEFAULT_RANDOM_INIT = "isometric"


def check_random_init(scheme: str) -> str:
    """``scheme`` if it names a random initialisation, else a ValueError listing the choices."""
    if scheme not in RANDOM_INITS:
        raise ValueError(f"unknown random initialisation {scheme!r}; choose from {', '.join(RANDOM_INITS)}")
    return scheme


@torch.no_grad()
def init_random_trunk(trunk: WideResNet50Trunk, scheme: str = DEFAULT_RANDOM_INIT) -> dict[str, str]:
    """Randomly initialise the trunk for use as a frozen, untrained feature extractor.

    Why: with torchvision's training initialisation every residual branch adds a fresh random function, and
    after 7-13 random blocks the layer2/layer3 features of a defect and of good texture are barely apart
    (measured on the demo's brushed_metal: a training-free detector falls from 0.95 image AUROC on the stem's
    features to 0.65 on layer2; ``benchmarks/probe_random_backbone.py``). ``isometric`` keeps what the image
    says as it goes deeper:

    - every conv is a random orthogonal map (``nn.init.orthogonal_`` over the flattened kernel), so no
      direction of its input is lost or amplified;
    - each residual branch's last BatchNorm starts at zero (torchvision's ``zero_init_residual``), so blocks
      pass their input on and only the stage transitions project it;
    - the stem's filters have zero mean, so its channels answer to structure and colour rather than to the
      overall brightness that lighting changes move anyway.

    ``torchvision`` keeps torchvision's own initialisation (Kaiming normal, fan_out), which a new trunk
    already has. Either way the layer structure, the forward pass and the parameter names are unchanged;
    only the random draws differ. Call it on a newly built trunk; returns what the bundle records.
    """
    if check_random_init(scheme) == "torchvision":
        return {"init": "torchvision kaiming_normal(fan_out)"}
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            flat = torch.empty(m.weight.shape[0], m.weight[0].numel())
            nn.init.orthogonal_(flat)
            m.weight.copy_(flat.reshape(m.weight.shape))
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
    stem = trunk.conv1.weight
    stem.sub_(stem.mean(dim=(1, 2, 3), keepdim=True))
    return {"init": "isometric: orthogonal convs, zero-init residual branches, zero-mean stem filters"}


def load_backbone_weights(trunk: WideResNet50Trunk, state: dict[str, Tensor], source: str = "") -> None:
    """Load the trunk's tensors from a full WideResNet50-2 state dict; keys it does not build (fc, layer4 unless
    asked for) are ignored."""
    load_state(trunk, state, "WideResNet50-2", source, hint=" (is it a ResNet50 rather than WideResNet50-2?)")


def download_imagenet_weights(name: str = "imagenet1k_v1", cache_dir: str | Path | None = None) -> Path:
    """Fetch torchvision's official weights once, verifying the SHA-256 prefix in their file name.

    A failed download (offline machine, proxy, HTTP error, wrong hash) is one :class:`BackboneWeightsError` that
    says why and how to pass a local copy instead; nothing half-downloaded is left in the cache.
    """
    if name not in IMAGENET_WEIGHTS:
        raise BackboneWeightsError(f"unknown weights {name!r}; choose from {sorted(IMAGENET_WEIGHTS)}")
    url = IMAGENET_WEIGHTS[name]
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / url.rsplit("/", 1)[1]
    if target.exists():
        return target
    offline_hint = (
        f"download {url} on a machine with internet and pass the file: --backbone-weights /path/to/{target.name} "
        f"(or copy it to {target})"
    )
    hash_prefix = target.stem.rsplit("-", 1)[1]
    try:
        with atomic_path(target) as tmp:
            digest = _fetch(url, tmp)
            if not digest.startswith(hash_prefix):
                raise BackboneWeightsError(
                    f"the {name} weights downloaded from {url} have SHA-256 {digest[:16]}..., expected "
                    f"{hash_prefix}...: damaged download or intercepting proxy; {offline_hint}"
                )
    except (OSError, http.client.HTTPException) as exc:  # URLError/HTTPError, timeouts, resets, a full disk
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise BackboneWeightsError(
            f"could not download the {name} weights from {url} ({reason}); {offline_hint}"
        ) from exc
    return target


def _fetch(url: str, dest: Path, timeout_s: float = 60.0) -> str:
    """Stream ``url`` into ``dest``; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(dest, "wb") as fh:
        for block in iter(lambda: response.read(1 << 20), b""):
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


@torch.no_grad()
def recalibrate_batchnorm(trunk: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics on the given images (cumulative average).

    Only for randomly initialised backbones: their BatchNorm layers start at mean 0 / var 1, which leaves
    layer3 activations ~10x larger than layer2's and swamps the feature mix. Pretrained weights are never
    touched. Returns the number of images seen.
    """
    bns = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
        m.train()
    seen = 0
    try:
        for batch in batches:
            trunk.forward(batch)
            seen += batch.shape[0]
    finally:
        for m, (momentum, training) in zip(bns, saved, strict=True):
            m.momentum = momentum
            m.train(training)
    trunk.eval()
    if seen == 0:
        raise ValueError("no images to re-estimate BatchNorm statistics on")
    return seen
