"""The hybrid loss of a DDPM with learned variance (Nichol & Dhariwal 2021): L_simple + lambda L_vlb.

Why here: diffusers trains learned-variance models with no loss of its own. The network outputs (eps, v); eps is
trained by MSE against the true noise, v by the variational bound's term at the sampled t with eps held fixed
(stop-gradient on the mean), so the variance learns without disturbing the mean. lambda L_vlb, with L_vlb = T E_t[L_t],
is estimated by ``(T / 1000) L_t`` (lambda = 0.001), in bits per dimension, as the paper's code does.
"""

from __future__ import annotations

import math

import torch

__all__ = ["HybridLoss", "discretized_gaussian_log_likelihood", "normal_kl"]


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit pixels ``x`` in [-1, 1] (bins of 2/255) under N(mean, e^(2 log_scale)); the outer bins run
    to +-infinity. Elementwise, in nats."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centred + 1.0 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return values.to(t.device)[t].float().view(-1, 1, 1, 1)


class HybridLoss:
    """Loss terms for a batch, from the training schedule's ``alphas_cumprod`` (length T)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        a = alphas_cumprod.double()
        a_prev = torch.cat([a.new_ones(1), a[:-1]])
        self.num_timesteps = a.numel()
        self.sqrt_a = a.sqrt()
        self.sqrt_one_minus_a = (1 - a).sqrt()
        betas = 1 - a / a_prev
        post_var = betas * (1 - a_prev) / (1 - a)
        # log of the posterior variance, its t = 0 value (0) replaced by t = 1's, as the paper's code clips it
        self.post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        self.log_betas = torch.log(betas)
        self.post_coef_x0 = betas * a_prev.sqrt() / (1 - a)
        self.post_coef_xt = (1 - a_prev) * (1 - betas).sqrt() / (1 - a)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return _at(self.sqrt_a, t) * x0 + _at(self.sqrt_one_minus_a, t) * noise

    def __call__(
        self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "mse", "vb"}`` (batch means); ``output`` is the network's 2C channels (eps, v in [-1, 1]), or
        C channels (eps alone) for a fixed variance: then the loss is the MSE and vb is 0."""
        if output.shape[1] == x0.shape[1]:
            mse = ((output - noise) ** 2).mean()
            return {"loss": mse, "mse": mse, "vb": torch.zeros_like(mse)}
        eps, v = torch.split(output, x0.shape[1], dim=1)
        mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
        frac = (v + 1) / 2
        model_log_var = frac * _at(self.log_betas, t) + (1 - frac) * _at(self.post_log_var, t)
        x0_pred = (x_t - _at(self.sqrt_one_minus_a, t) * eps.detach()) / _at(self.sqrt_a, t)
        model_mean = _at(self.post_coef_x0, t) * x0_pred + _at(self.post_coef_xt, t) * x_t
        true_mean = _at(self.post_coef_x0, t) * x0 + _at(self.post_coef_xt, t) * x_t
        kl = normal_kl(true_mean, _at(self.post_log_var, t), model_mean, model_log_var).mean(dim=(1, 2, 3))
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).mean(dim=(1, 2, 3))
        vb = torch.where(t == 0, nll, kl) / math.log(2.0) * (self.num_timesteps / 1000.0)
        return {"loss": (mse + vb).mean(), "mse": mse.mean(), "vb": vb.mean()}
