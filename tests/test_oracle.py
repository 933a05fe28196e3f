"""The Gaussian-mixture oracle: score, log-density, samples and moments, for every SDE."""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE

ALL = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]


def mixture_2d():
    covs = torch.tensor([[[0.30, 0.12], [0.12, 0.10]],
                         [[0.05, -0.02], [-0.02, 0.20]],
                         [[0.5, 0.0], [0.0, 0.02]]])
    return GaussianMixture([0.5, 0.3, 0.2], [[-1.0, 0.5], [1.0, -0.5], [0.3, 1.2]], covs)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("dim", [2, 5])
def test_score_is_gradient_of_log_prob(sde, dim):
    gm = mixture_2d() if dim == 2 else GaussianMixture.random(dim, 3, seed=1)
    x = torch.randn(16, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    t = torch.tensor([0.0, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.7, 1.0] * 2, dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, t, sde).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), t, sde), grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_log_prob_integrates_to_one_in_1d(sde):
    gm = GaussianMixture([0.7, 0.3], [[-0.5], [1.0]], [[[0.04]], [[0.25]]])
    for t in (0.0, 0.2, 0.9):
        half = 6 * math.sqrt(float(gm.moments(t, sde)[1][0, 0])) + 2
        x = torch.linspace(-half, half, 200001, dtype=torch.float64)[:, None]
        p = gm.log_prob(x, t, sde).exp()
        assert abs(torch.trapezoid(p, x[:, 0]).item() - 1) < 1e-6


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.slow
def test_log_prob_integrates_to_one_in_2d(sde):
    gm = mixture_2d()
    for t in (0.05, 0.5):
        half = 6 * math.sqrt(float(torch.linalg.eigvalsh(gm.moments(t, sde)[1]).max())) + 2
        u = torch.linspace(-half, half, 1201, dtype=torch.float64)
        xx, yy = torch.meshgrid(u, u, indexing="ij")
        p = gm.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1), t, sde).exp().reshape(xx.shape)
        total = torch.trapezoid(torch.trapezoid(p, u, dim=1), u)
        assert abs(total.item() - 1) < 1e-4


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_samples_match_moments(sde):
    gm = mixture_2d()
    n = 200000
    for t in (0.0, 0.4):
        x, k = gm.sample(n, t, sde, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
                         return_components=True)
        mean, cov = gm.moments(t, sde)
        sd = cov.diagonal().sqrt()
        assert ((x.mean(0) - mean).abs() < 5 * sd / math.sqrt(n)).all()
        emp = torch.cov(x.T)
        # entrywise standard error of a Gaussian sample covariance, with slack for the mixture's kurtosis
        se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None] + cov**2) / n)
        assert ((emp - cov).abs() < 8 * se).all(), (emp, cov)
        freq = torch.bincount(k, minlength=3).double() / n
        assert ((freq - gm.weights).abs() < 5 * torch.sqrt(gm.weights * (1 - gm.weights) / n)).all()


def test_samples_at_t_follow_the_sde_from_samples_at_zero():
    """Sampling p_t directly equals diffusing exact p_0 samples with the kernel (same moments)."""
    sde = VPSDE()
    gm = GaussianMixture.random(3, 2, seed=4)
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(100000, 0.0, sde, generator=g, dtype=torch.float64)
    t = torch.full((100000,), 0.6, dtype=torch.float64)
    xt, _, _ = sde.marginal_sample(x0, t, generator=g)
    mean, cov = gm.moments(0.6, sde)
    assert (xt.mean(0) - mean).abs().max() < 5 * cov.diagonal().sqrt().max() / math.sqrt(100000)
    assert (torch.cov(xt.T) - cov).abs().max() < 0.02


def test_image_shaped_events_and_float32():
    sde = VPSDE()
    d = 1 * 2 * 2
    base = GaussianMixture.random(d, 2, seed=2)
    gm = GaussianMixture(base.weights, base.means.reshape(2, 1, 2, 2), base.covs)
    x = gm.sample(8, 0.3, sde)
    assert x.shape == (8, 1, 2, 2) and x.dtype == torch.float32
    s = gm.score(x, torch.full((8,), 0.3), sde)
    assert s.shape == x.shape and s.dtype == torch.float32
    torch.testing.assert_close(s.reshape(8, d), base.score(x.reshape(8, d), 0.3, sde))
    assert gm.log_prob(x, 0.3, sde).shape == (8,)


def test_bad_mixtures_are_rejected():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match="event shape"):
        mixture_2d().score(torch.zeros(3, 3), 0.5, VPSDE())
