"""The SDEs: coefficients, kernels, prior, discretisations, shapes and errors."""

import math
import pathlib

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.sde import CosineVPSDE

ALL = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE()]
IDS = ["vp", "subvp", "ve", "cosine"]


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_drift_diffusion_and_kernel_agree(sde):
    """dm/dt = a m and d s^2/dt = 2 a s^2 + g^2 on a grid of t (central differences, float64)."""
    t = torch.linspace(0.01, 0.99, 60, dtype=torch.float64)
    h = 1e-6
    m = lambda u: sde.mean_coef(u)  # noqa: E731
    v = lambda u: sde.std(u) ** 2  # noqa: E731
    dm = (m(t + h) - m(t - h)) / (2 * h)
    dv = (v(t + h) - v(t - h)) / (2 * h)
    a, g = sde.drift_coef(t), sde.diffusion(t)
    torch.testing.assert_close(dm, a * m(t), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dv, 2 * a * v(t) + g**2, rtol=1e-6, atol=1e-9)
    # drift(x, t) is the linear drift a(t) x
    x = torch.randn(60, 3, dtype=torch.float64)
    torch.testing.assert_close(sde.drift(x, t), a[:, None] * x)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_prior_logp_matches_torch_distributions(sde):
    z = sde.prior_sample((5, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(dim=(1, 2, 3))
    torch.testing.assert_close(sde.prior_logp(z), ref, rtol=1e-5, atol=1e-3)
    assert sde.prior_logp(z).shape == (5,)
    # the prior sample has the prior's scale
    big = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(1))
    assert abs(big.std().item() / sde.prior_std - 1) < 0.02


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_marginal_against_monte_carlo_forward_simulation(sde):
    """Draw x_s from the kernel, simulate the forward SDE with a fine Euler-Maruyama grid to t,
    and compare mean and std of x_t with the kernel p_0t(. | x0)."""
    gen = torch.Generator().manual_seed(0)
    n, x0 = 40000, torch.full((1,), 1.5, dtype=torch.float64)
    s, t, steps = 0.1, 0.7, 1500
    x = sde.marginal(x0.expand(n, 1), torch.tensor(s, dtype=torch.float64))[0] + sde.std(
        torch.tensor(s, dtype=torch.float64)) * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    dt = (t - s) / steps
    for i in range(steps):
        u = torch.full((n,), s + i * dt, dtype=torch.float64)
        x = x + sde.drift(x, u) * dt + sde.diffusion(u)[:, None] * math.sqrt(dt) * torch.randn(
            n, 1, generator=gen, dtype=torch.float64)
    mean, std = sde.marginal(x0[None], torch.tensor([t], dtype=torch.float64))
    se_mean = std.item() / math.sqrt(n)
    assert abs(x.mean().item() - mean.item()) < 5 * se_mean + 1e-3 * abs(mean.item())
    se_std = std.item() / math.sqrt(2 * n)
    assert abs(x.std().item() - std.item()) < 5 * se_std + 2e-3 * std.item()


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_std_accurate_at_small_t_in_float32(sde):
    t = torch.tensor([1e-5, 1e-4, 1e-3, 0.5])
    rel = (sde.std(t).double() - sde.std(t.double())).abs() / sde.std(t.double())
    assert rel.max() < 1e-5, rel


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_transition_is_exact(sde):
    """Composing the discrete transitions from s to t reproduces the kernel variance s(t)^2 and
    mean scale m(t)/m(s) exactly (no Euler error)."""
    s, t, n = 0.05, 0.9, 37
    grid = torch.linspace(s, t, n + 1, dtype=torch.float64)
    var = sde.std(grid[:1]) ** 2
    scale = torch.ones(1, dtype=torch.float64)
    x = torch.ones(1, 1, dtype=torch.float64)
    for i in range(1, n + 1):
        r, G = sde.transition(grid[i:i + 1], grid[i] - grid[i - 1])
        f = (r - 1) * x  # the forward discretisation's drift (eq. 46)
        r = (x + f) / x
        scale = scale * r.flatten()
        var = r.flatten() ** 2 * var + G**2
    torch.testing.assert_close(var, sde.std(grid[-1:]) ** 2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scale, sde.mean_coef(grid[-1:]) / sde.mean_coef(grid[:1]), rtol=1e-10, atol=0)


def test_vp_transition_matches_ddpm_and_langevin_alpha_everywhere():
    vp, subvp, ve = VPSDE(), SubVPSDE(), VESDE()
    t, dt = torch.tensor([0.3, 0.8], dtype=torch.float64), 1e-3
    # DDPM: 1 - beta_i = m(t)^2 / m(t - dt)^2 = exp(-int_{t-dt}^t beta) (beta linear: midpoint exact)
    alpha = vp.langevin_alpha(t, dt)
    torch.testing.assert_close(1 - alpha, -torch.expm1(-vp.beta(t - dt / 2) * dt), rtol=1e-9, atol=0)
    _, G = vp.transition(t, dt)
    torch.testing.assert_close(G**2, 1 - alpha)
    # sub-VP has a Langevin signal scale too (the reference crashes here), equal to VP's mean part
    torch.testing.assert_close(subvp.langevin_alpha(t, dt), alpha)
    torch.testing.assert_close(ve.langevin_alpha(t, dt), torch.ones_like(t))
    # VE: SMLD's sqrt(sigma_i^2 - sigma_{i-1}^2)
    _, G = ve.transition(t, dt)
    torch.testing.assert_close(G**2, ve.sigma(t) ** 2 - ve.sigma(t - dt) ** 2)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("shape", [(6, 2), (6, 3, 4, 4)], ids=["vectors", "images"])
def test_shapes_for_any_rank(sde, shape):
    x = torch.randn(shape)
    t = torch.rand(shape[0])
    mean, std = sde.marginal(x, t)
    assert mean.shape == x.shape and std.shape == (shape[0],)
    assert sde.drift(x, t).shape == x.shape
    assert sde.diffusion(t).shape == (shape[0],)
    assert sde.reverse_drift(x, t, torch.randn(shape)).shape == x.shape
    r, q = sde.transition(t, 0.01)
    assert r.shape == q.shape == (shape[0],)
    assert sde.prior_logp(sde.prior_sample(shape)).shape == (shape[0],)
    assert sde.noise_label(t).shape == (shape[0],)
    # scalar t broadcasts
    mean_s, _ = sde.marginal(x, 0.5)
    torch.testing.assert_close(mean_s, sde.marginal(x, torch.full((shape[0],), 0.5))[0])


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_reverse_drift_and_probability_flow(sde):
    x, t, score = torch.randn(4, 3), torch.rand(4), torch.randn(4, 3)
    g2 = sde.diffusion(t)[:, None] ** 2
    torch.testing.assert_close(sde.reverse_drift(x, t, score), sde.drift(x, t) - g2 * score)
    torch.testing.assert_close(sde.reverse_drift(x, t, score, probability_flow=True),
                               sde.drift(x, t) - 0.5 * g2 * score)


def test_noise_labels():
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(VPSDE().noise_label(t), 999 * t)
    torch.testing.assert_close(SubVPSDE().noise_label(t), 999 * t)
    ve = VESDE()
    torch.testing.assert_close(ve.noise_label(t), ve.sigma(t))
    torch.testing.assert_close(VESDE(noise_label="log_sigma").noise_label(t), ve.sigma(t).log())
    torch.testing.assert_close(ve.sigma(t), torch.tensor([0.01, math.sqrt(0.01 * 50), 50.0]))


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="valid: 'sigma', 'log_sigma'"):
        VESDE(noise_label="t")
    with pytest.raises(ValueError, match="3 entries but the data batch has 4"):
        VPSDE().marginal(torch.randn(4, 2), torch.rand(3))


@pytest.mark.parametrize("name,cls", [("vp", VPSDE), ("subvp", SubVPSDE), ("ve", VESDE)])
def test_the_sde_configs_build_their_class(name, cls):
    """One way to build an SDE: its class, directly or through the ``_target_`` of conf/sde/<name>.yaml."""
    root = pathlib.Path(__file__).resolve().parents[1]
    sde = instantiate(OmegaConf.load(root / "conf" / "sde" / f"{name}.yaml"))
    assert type(sde) is cls and repr(sde) == repr(cls())
