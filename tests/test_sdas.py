"""SDAS on diffusers: the strength rule, the hybrid loss, the model folder, sampling and the CLI (tiny UNet)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import DDPMScheduler  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from edge_ad.cli.main import app  # noqa: E402
from edge_ad.synthesis.patterns import FolderPatterns  # noqa: E402
from edge_ad.synthesis.sdas import SdasConfig, preset  # noqa: E402
from edge_ad.synthesis.sdas.loss import HybridLoss  # noqa: E402
from edge_ad.synthesis.sdas.model import build_unet, load_model, save_model  # noqa: E402
from edge_ad.synthesis.sdas.sample import parse_strength, sample_images, write_samples  # noqa: E402
from edge_ad.synthesis.sdas.scheduler import StrengthDDPMScheduler, make_scheduler  # noqa: E402

runner = CliRunner()
TINY = SdasConfig(
    image_size=32, block_out_channels=(8, 16), layers_per_block=1, attention_levels=(1,), attention_head_dim=8,
    sample_steps=5, batch_size=4, train_steps=2, checkpoint_every=1, learn_sigma=True,
)  # fmt: skip
FIXED = TINY.replace(learn_sigma=False)  # the cpu preset's fixed posterior variance


def _net(config: SdasConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_unet(config).eval()
    with torch.no_grad():  # a fresh UNet's last conv is zero: give it an output so v and eps vary
        for p in net.conv_out.parameters():
            p.normal_(0, 0.2)
    return net


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return _net(TINY)


def _library_scheduler(variance_type: str = "learned_range") -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", variance_type=variance_type, timestep_spacing="linspace"
    )


@torch.no_grad()
def _sample(net: torch.nn.Module, scheduler: DDPMScheduler, seed: int) -> torch.Tensor:
    scheduler.set_timesteps(TINY.sample_steps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 3, 32, 32), generator=gen)
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t).sample, t, x, generator=gen).prev_sample
    return x


@pytest.mark.parametrize(("config", "variance_type"), [(TINY, "learned_range"), (FIXED, "fixed_small")])
def test_strength_zero_is_the_library_sampler_bit_for_bit(config: SdasConfig, variance_type: str) -> None:
    net = _net(config)
    ours = make_scheduler(config)
    assert ours.config.variance_type == variance_type
    ours.set_strength(0.0)
    assert torch.equal(_sample(net, ours, 5), _sample(net, _library_scheduler(variance_type), 5))
    ours.set_strength(0.15)
    assert not torch.equal(_sample(net, ours, 5), _sample(net, _library_scheduler(variance_type), 5))


def test_each_step_variance_scales_by_one_plus_s(unet: torch.nn.Module) -> None:
    lib, ours = _library_scheduler(), make_scheduler(TINY)
    lib.set_timesteps(20)
    ours.set_timesteps(20)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((2, 3, 32, 32), generator=gen)
    for t in lib.timesteps[[0, 7, 18]]:
        out = unet(x, t).sample.detach()
        v = out[:, 3:]
        log_var = lib._get_variance(t, predicted_variance=v)
        for s in (0.1, 0.5, 2.0):
            ours.set_strength(s)
            ratio = torch.exp(ours._get_variance(t, predicted_variance=v) - log_var)
            torch.testing.assert_close(ratio, torch.full_like(ratio, 1 + s), rtol=1e-5, atol=0)
            # and in the step itself: x' - mu is sqrt(1 + s) times the library's noise term, same noise draw
            base = lib.step(out, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
            wider = ours.step(out, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
            z = torch.randn(out[:, :3].shape, generator=torch.Generator().manual_seed(9))
            mu = base - torch.exp(0.5 * log_var) * z
            torch.testing.assert_close(wider - mu, math.sqrt(1 + s) * (base - mu), rtol=1e-3, atol=1e-5)


def test_per_image_strengths_and_fixed_variances(unet: torch.nn.Module) -> None:
    ours = make_scheduler(TINY)
    ours.set_strength(torch.tensor([0.0, 0.5]).view(2, 1, 1, 1))
    lib_x = _sample(unet, _library_scheduler(), 3)
    x = _sample(unet, ours, 3)
    assert torch.equal(x[0], lib_x[0]) and not torch.equal(x[1], lib_x[1])
    fixed, plain = make_scheduler(FIXED), _library_scheduler("fixed_small")
    fixed.set_timesteps(20)
    plain.set_timesteps(20)
    fixed.set_strength(0.3)
    out, x = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for t in plain.timesteps[[0, 10, 18]]:
        torch.testing.assert_close(fixed._get_variance(t), 1.3 * plain._get_variance(t))
        base = plain.step(out, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
        wider = fixed.step(out, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
        z = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        mu = base - plain._get_variance(t).sqrt() * z
        torch.testing.assert_close(wider - mu, math.sqrt(1.3) * (base - mu), rtol=1e-3, atol=1e-5)
    assert isinstance(fixed, StrengthDDPMScheduler)
    with pytest.raises(ValueError):
        ours.set_strength(-0.1)


def test_hybrid_loss_trains_eps_by_mse_and_v_by_the_bound(unet: torch.nn.Module) -> None:
    loss = HybridLoss(make_scheduler(TINY).alphas_cumprod)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((4, 3, 16, 16), generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 1, 500, 999])
    x_t = loss.noisy(x0, noise, t)
    output = torch.cat([noise + 0.1 * torch.randn(x0.shape, generator=gen), torch.zeros_like(x0)], 1)
    output.requires_grad_(True)
    terms = loss(output, x0, x_t, noise, t)
    assert torch.isfinite(terms["loss"]) and terms["vb"] > 0
    torch.testing.assert_close(terms["mse"], ((output[:, :3] - noise) ** 2).mean())
    terms["vb"].backward()
    assert output.grad is not None
    assert torch.count_nonzero(output.grad[:, :3]) == 0  # the bound does not move eps (stop-gradient on the mean)
    assert torch.count_nonzero(output.grad[:, 3:]) > 0
    # the exact eps and v = -1 (frac 0: the true posterior variance) make the bound's KL terms (t > 0) vanish
    t = torch.tensor([1, 250, 500, 999])
    x_t = loss.noisy(x0, noise, t)
    exact = torch.cat([noise, -torch.ones_like(x0)], 1)
    assert float(loss(exact, x0, x_t, noise, t)["vb"]) < 1e-5
    assert float(loss(torch.cat([noise, torch.ones_like(x0)], 1), x0, x_t, noise, t)["vb"]) > 1e-3
    # a fixed variance: eps alone, the loss is the MSE
    fixed = loss(noise + 0.5, x0, x_t, noise, t)
    assert float(fixed["vb"]) == 0.0 and float(fixed["loss"]) == pytest.approx(0.25)


def test_model_folder_round_trip_without_pickle(unet: torch.nn.Module, tmp_path: Path) -> None:
    save_model(tmp_path / "m", unet, TINY, {"category": "washer"})
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["sdas.json", "sdas.safetensors"]
    net, config, info = load_model(tmp_path / "m")
    assert config == TINY and info["category"] == "washer"
    for (k, a), (k2, b) in zip(unet.state_dict().items(), net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    meta = json.loads((tmp_path / "m" / "sdas.json").read_text())
    meta["config"]["block_out_channels"] = [8, 32]
    (tmp_path / "m" / "sdas.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit"):
        load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="not an SDAS model folder"):
        load_model(tmp_path)


def test_sampling_is_seeded_and_records_strengths(unet: torch.nn.Module, tmp_path: Path) -> None:
    first = list(sample_images(unet, TINY, 3, (0.1, 0.2), seed=4, batch_size=2))
    again = list(sample_images(unet, TINY, 3, (0.1, 0.2), seed=4, batch_size=2))
    assert len(first) == 3 and all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im, _ in first)
    assert all(np.array_equal(a, b) and s == r for (a, s), (b, r) in zip(first, again, strict=True))
    assert all(0.1 <= s <= 0.2 for _, s in first) and len({s for _, s in first}) == 3
    save_model(tmp_path / "m", unet, TINY, {"category": "washer"})
    paths = write_samples(tmp_path / "m", 3, (0.1, 0.2), tmp_path / "out", seed=4, batch_size=2)
    record = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert [p.name for p in paths] == sorted(record["files"]) and record["steps"] == TINY.sample_steps
    assert len(FolderPatterns(tmp_path / "out")) == 3  # a sample folder is an anomaly source as it is


def test_parse_strength() -> None:
    assert parse_strength("0.1:0.2") == (0.1, 0.2)
    assert parse_strength("0.3") == (0.3, 0.3)
    for bad in ("0.2:0.1", "-1", "a:b", "0.1:0.2:0.3", "nan"):
        with pytest.raises(ValueError):
            parse_strength(bad)


def test_presets() -> None:
    assert preset("paper").image_size == 256 and preset("cpu").image_size < 256
    assert preset("paper").learn_sigma and not preset("cpu").learn_sigma
    assert build_unet(FIXED).config.out_channels == 3 and build_unet(TINY).config.out_channels == 6
    with pytest.raises(ValueError, match="choose one of"):
        preset("huge")
    with pytest.raises(ValueError):
        SdasConfig(image_size=30, block_out_channels=(8, 16, 16))  # not divisible by 4
    assert SdasConfig.from_json(json.loads(json.dumps(preset("paper").to_json()))) == preset("paper")


def _one_line_error(result: object, needle: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = result.output.strip()  # type: ignore[attr-defined]
    assert needle in text and "Traceback" not in text and len(text.splitlines()) == 1, text


def test_cli_refuses_bad_input_in_one_line(unet: torch.nn.Module, tiny_demo: Path, tmp_path: Path) -> None:
    save_model(tmp_path / "m", unet, TINY, {})
    sample = ["sdas", "sample", str(tmp_path / "m"), "--out", str(tmp_path / "s")]
    _one_line_error(runner.invoke(app, [*sample, "--strength", "0.2:0.1"]), "--strength")
    _one_line_error(runner.invoke(app, [*sample, "-n", "0"]), "-n must be")
    _one_line_error(runner.invoke(app, ["sdas", "sample", str(tmp_path), "--out", str(tmp_path / "s")]), "not an SDAS")
    train = ["sdas", "train", str(tiny_demo), "--out", str(tmp_path / "t"), "--device", "cpu"]
    _one_line_error(runner.invoke(app, [*train, "--preset", "huge"]), "unknown SDAS preset")
    _one_line_error(runner.invoke(app, [*train, "--steps", "0"]), "train_steps must be >= 1")
    _one_line_error(runner.invoke(app, ["sdas", "train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")]), "")
    _one_line_error(runner.invoke(app, [*train, "--device", "tpu"]), "--device")
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


def test_cli_names_the_extra_when_diffusers_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    result = runner.invoke(app, ["sdas", "sample", str(tmp_path), "--out", str(tmp_path / "s")])
    from edge_ad.extras import pip_line

    _one_line_error(result, "diffusers is not installed")
    flat = " ".join(result.output.split())
    assert "[sdas] extra" in flat and pip_line("sdas") in flat


def test_cli_trains_and_samples(tiny_demo: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    args = ["sdas", "train", str(tiny_demo), "--out", str(model), "--steps", "2", "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = json.loads((model / "sdas.json").read_text())
    assert meta["category"] == "washer" and meta["steps_done"] == 2 and meta["config"]["train_steps"] == 2
    again = runner.invoke(app, [*args, "--device", "cpu"])
    _one_line_error(again, "already holds an SDAS model")
    result = runner.invoke(app, ["sdas", "sample", str(model), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s").glob("sdas_*.png"))) == 2
    again = runner.invoke(app, ["sdas", "sample", str(model), "-n", "1", "--out", str(tmp_path / "s")])
    _one_line_error(again, "already holds SDAS samples")
