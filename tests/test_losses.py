"""Denoising score matching against the closed form of a Gaussian data distribution."""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, DSMLoss, GaussianMixture, NetworkScore, NonFiniteLossError, SubVPSDE
from scoresde.losses import sample_time


def gaussian_data(dim: int, s: float) -> GaussianMixture:
    return GaussianMixture([1.0], torch.zeros(1, dim), (s**2 * torch.eye(dim))[None])


@pytest.mark.parametrize("t", [0.01, 0.2, 0.7])
def test_minimal_eps_loss_matches_closed_form(t):
    """Data N(0, s^2 I) under VP: the minimal eps-matching loss at fixed t is
    D (1 - std^2 / (alpha^2 s^2 + std^2)) per example (sum of squares over the D dimensions)."""
    sde, dim, s, n = VPSDE(), 4, 0.5, 200000
    gm = gaussian_data(dim, s)
    gen = torch.Generator().manual_seed(0)
    x0 = gm.sample(n, 0.0, sde, generator=gen, dtype=torch.float64)
    tt = torch.full((n,), t, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    alpha, std = sde.mean_coef(tt[:1]).item(), sde.std(tt[:1]).item()
    expected = dim * (1 - std**2 / (alpha**2 * s**2 + std**2))
    loss = DSMLoss(reduce="sum")  # 0.5 * sum over dimensions
    per = 2 * loss.per_example(gm.score_fn(sde), sde, x0, tt, z)
    se = per.std().item() / math.sqrt(n)
    assert abs(per.mean().item() - expected) < 4 * se, (per.mean().item(), expected, se)
    # the mean reduction is the same divided by D / 2
    per_mean = DSMLoss(reduce="mean").per_example(gm.score_fn(sde), sde, x0, tt, z)
    torch.testing.assert_close(per_mean * dim, per)
    # any perturbed score does worse (paired over the same draws)
    exact = gm.score_fn(sde)
    for bad in (lambda x, u: 1.1 * exact(x, u), lambda x, u: exact(x, u) + 0.1 / sde.std(u)[:, None]):
        gap = 2 * loss.per_example(bad, sde, x0, tt, z) - per
        assert gap.mean() > 4 * gap.std() / math.sqrt(n)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_likelihood_weighting_is_g2_over_std2_times_eps_loss(sde):
    gm = GaussianMixture.random(3, 2, seed=0)
    x0 = gm.sample(64, 0.0, sde, generator=torch.Generator().manual_seed(1))
    t = torch.rand(64, generator=torch.Generator().manual_seed(2)) * 0.99 + 0.01
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    score = lambda x, u: 0.9 * gm.score(x, u, sde)  # noqa: E731
    a = DSMLoss(weighting="sigma2").per_example(score, sde, x0, t, z)
    b = DSMLoss(weighting="likelihood").per_example(score, sde, x0, t, z)
    torch.testing.assert_close(b, a * sde.diffusion(t) ** 2 / sde.std(t) ** 2, rtol=1e-4, atol=1e-6)


def test_full_loss_on_vectors_and_images_with_a_network():
    torch.manual_seed(0)
    sde = VPSDE()

    class Net(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, x, c):
            return self.conv(x) * torch.cos(c / 999)[:, None, None, None]

    images = torch.randn(8, 3, 4, 4)
    score = NetworkScore(Net(3), sde)
    loss = DSMLoss()(score, sde, images, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert score.net.conv.weight.grad is not None
    vectors = torch.randn(8, 2)
    gm = gaussian_data(2, 1.0)
    assert torch.isfinite(DSMLoss(time_sampling="stratified")(gm.score_fn(sde), sde, vectors))
    with pytest.raises(ValueError, match="shaped like its input"):
        NetworkScore(lambda x, c: x[:, :1], sde)(vectors, torch.rand(8))


def test_eps_parameterization_and_score_parameterization():
    sde = VESDE()
    x, t = torch.randn(5, 2), torch.rand(5)
    out = torch.randn(5, 2)
    net = lambda x, c: out  # noqa: E731
    torch.testing.assert_close(NetworkScore(net, sde)(x, t), -out / sde.std(t)[:, None])
    torch.testing.assert_close(NetworkScore(net, sde, "score")(x, t), out)
    seen = {}

    def recording_net(x, c):
        seen["c"] = c
        return x

    NetworkScore(recording_net, sde)(x, t)
    torch.testing.assert_close(seen["c"], sde.noise_label(t))
    with pytest.raises(ValueError, match="valid: eps, score"):
        NetworkScore(net, sde, "x0")


def test_nan_loss_names_the_step_and_time():
    sde = VPSDE()
    nan_at_late_t = lambda x, t: torch.where((t > 0.5)[:, None], torch.nan, 0.0) * x  # noqa: E731
    with pytest.raises(NonFiniteLossError, match=r"at step 17: \d+ of 32 examples, at t = 0\.[5-9]"):
        DSMLoss()(nan_at_late_t, sde, torch.randn(32, 2), step=17, generator=torch.Generator().manual_seed(0))


def test_time_sampling():
    t = sample_time(1000, 1e-5, sampling="uniform", generator=torch.Generator().manual_seed(0))
    assert t.min() >= 1e-5 and t.max() <= 1.0
    s = sample_time(64, 1e-5, sampling="stratified", generator=torch.Generator().manual_seed(0))
    strata = ((s - 1e-5) / (1 - 1e-5) * 64).floor().long()
    assert torch.equal(strata, torch.arange(64))
    cases = [({"weighting": "l2"}, "valid: sigma2, likelihood"), ({"reduce": "max"}, "valid: mean, sum"),
             ({"time_sampling": "sobol"}, "valid: uniform, stratified"), ({"eps": 0.0}, "eps")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            DSMLoss(**bad)
