"""RealNet draft modules: AFS scoring and selection, G_k shapes, RRS residuals, top-k gather, decoder."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from edge_ad.models.realnet.afs import AfsScorer, gather_channels, select_channels  # noqa: E402
from edge_ad.models.realnet.reconstruction import Reconstruction  # noqa: E402
from edge_ad.models.realnet.rrs import ResidualSelection, SegmentationDecoder, residuals  # noqa: E402


def _masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    masks = torch.zeros(n, size, size)
    for i in range(n):
        y, x = torch.randint(0, size - 12, (2,), generator=gen).tolist()
        masks[i, y : y + 12, x : x + 10] = 1
    return masks


def test_afs_keeps_the_channels_whose_response_matches_the_mask() -> None:
    gen = torch.Generator().manual_seed(0)
    scorer = AfsScorer(6)
    for _ in range(3):  # batches accumulate
        masks = _masks(4, 32, gen)
        normal = torch.randn(4, 6, 8, 8, generator=gen)
        anomalous = normal.clone()
        small = F.interpolate(masks[:, None], size=(8, 8), mode="area")[:, 0]
        anomalous[:, 1] += 3 * small.sqrt()  # a response where the anomaly is: squared difference ~ mask
        anomalous[:, 4] += 2 * small.sqrt()
        anomalous[:, [0, 2]] += torch.randn(4, 2, 8, 8, generator=gen)  # changed everywhere: not the anomaly
        # channels 3 and 5 do not react at all
        scorer.update(anomalous, normal, masks)
    losses = scorer.losses()
    assert losses.shape == (6,) and scorer.count == 12
    assert select_channels(losses, 2).tolist() == [1, 4]
    assert losses[[1, 4]].max() < losses[[0, 2, 3, 5]].min()
    with pytest.raises(ValueError):
        select_channels(losses, 7)
    with pytest.raises(ValueError):
        AfsScorer(6).losses()
    features = torch.randn(2, 6, 5, 5, generator=gen)
    idx = torch.tensor([1, 4])
    assert torch.equal(gather_channels(features, idx), features[:, [1, 4]])


@pytest.mark.parametrize(("channels", "grid"), [(24, 16), (40, 8)])
def test_reconstruction_keeps_each_level_shape(channels: int, grid: int) -> None:
    torch.manual_seed(0)
    net = Reconstruction(channels)
    x = torch.randn(2, channels, grid, grid, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    F.mse_loss(y, torch.zeros_like(y)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    attention = [m for m in net.modules() if type(m).__name__ == "_Attention"]
    assert len(attention) == 2 * 2 + 2  # two blocks in each of the two deeper down stages, one deeper up stage
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, channels, 10, 10))


def test_residuals_are_upsampled_and_concatenated() -> None:
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 6, 8, 8, generator=gen)]
    recs = [f + 0.5 for f in feats]
    res = residuals(feats, recs)
    assert res.shape == (2, 10, 16, 16)
    torch.testing.assert_close(res, torch.full_like(res, 0.25))
    assert residuals(feats, feats).abs().max() == 0


def test_rrs_picks_each_images_own_channels() -> None:
    sel = ResidualSelection(channels=8, k=2).eval()  # fresh running stats (0, 1): the norm is almost the identity
    res = torch.zeros(2, 8, 6, 6)
    res[0, 3, 2, 2] = 50.0  # image 0: one hot spot in channel 3 (highest max)
    res[0, 5] = 2.0  # and channel 5 raised everywhere (highest mean)
    res[0, 6, 0, 0] = 20.0
    res[1, 7] = 3.0  # image 1: other channels
    res[1, 1, 4, 4] = 40.0
    res[1, 2] = 1.0
    by_max, by_mean = sel.indices(sel.norm(res))
    assert by_max[0].tolist() == [3, 6] and by_max[1].tolist() == [1, 7]
    assert by_mean[0, 0] == 5 and by_mean[1, 0] == 7
    out = sel(res)
    normed = sel.norm(res)
    assert out.shape == (2, 4, 6, 6)
    for i in range(2):
        want = normed[i, torch.cat([by_max[i], by_mean[i]])]
        assert torch.equal(out[i], want)
    with pytest.raises(ValueError):
        ResidualSelection(8, 9)


def test_decoder_gives_two_class_maps_at_twice_the_grid() -> None:
    torch.manual_seed(0)
    dec = SegmentationDecoder(16)
    x = torch.randn(2, 16, 12, 12)
    logits = dec(x)
    assert logits.shape == (2, 2, 24, 24)
    p = dec.probability(x).detach()
    assert p.shape == (2, 24, 24) and float(p.min()) >= 0 and float(p.max()) <= 1
    target = torch.zeros(2, 24, 24, dtype=torch.long)
    F.cross_entropy(logits, target).backward()
    assert all(q.grad is not None for q in dec.parameters())
