"""The random-backbone initialisations: what each promises, and that the bundle records which one was used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_ad.models.backbones.wide_resnet import (
    RANDOM_INITS,
    Bottleneck,
    WideResNet50Trunk,
    init_random_trunk,
)
from edge_ad.models.simplenet.pipeline import BackboneSpec


def _trunk(seed: int = 0) -> WideResNet50Trunk:
    torch.manual_seed(seed)
    return WideResNet50Trunk()


def _isometric(seed: int) -> WideResNet50Trunk:
    trunk = _trunk(seed)
    init_random_trunk(trunk, "isometric")  # draws from the global generator, as training does after seeding
    return trunk


def test_isometric_convs_are_orthogonal_maps() -> None:
    trunk = _isometric(0)
    for name, m in trunk.named_modules():
        if not isinstance(m, nn.Conv2d) or name == "conv1":  # the stem is re-centred after, checked below
            continue
        w = m.weight.reshape(m.weight.shape[0], -1).double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-5), name


def test_isometric_residual_blocks_pass_their_input_on() -> None:
    trunk = _isometric(0)
    trunk.eval()
    block = trunk.layer2[1]  # no downsample: with a zero residual branch it is the identity on x >= 0
    assert isinstance(block, Bottleneck) and block.downsample is None
    x = torch.rand(1, 512, 7, 7)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    # torchvision's init does not: its residual branch adds a random function
    plain = _trunk()
    plain.eval()
    with torch.no_grad():
        assert not torch.allclose(plain.layer2[1](x), x, atol=1e-3)


def test_isometric_stem_ignores_overall_brightness() -> None:
    trunk = _isometric(0)
    flat = torch.full((1, 3, 32, 32), 0.7)
    with torch.no_grad():
        response = trunk.conv1(flat)[..., 4:-4, 4:-4]  # away from the zero padding
    assert response.abs().max() < 1e-5
    plain = _trunk()
    with torch.no_grad():
        assert plain.conv1(flat)[..., 4:-4, 4:-4].abs().max() > 1e-2


def test_torchvision_scheme_keeps_the_trunk_as_built() -> None:
    trunk = _trunk(3)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    info = init_random_trunk(trunk, "torchvision")
    assert "kaiming" in info["init"]
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_isometric_draw_follows_the_seed() -> None:
    a, b, c = _isometric(1), _isometric(1), _isometric(2)
    assert torch.equal(a.layer3[0].conv2.weight, b.layer3[0].conv2.weight)
    assert not torch.equal(a.layer3[0].conv2.weight, c.layer3[0].conv2.weight)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="isometric"):
        init_random_trunk(_trunk(), "xavier")
    with pytest.raises(ValueError, match="isometric"):
        BackboneSpec(random=True, random_init="xavier")
    assert "isometric" in RANDOM_INITS
