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


# --- likelihood weighting with importance-sampled time ------------------------------------------------------
IS_SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "vp_short": VPSDE(0.5, 5.0),
           "subvp_short": SubVPSDE(0.2, 8.0), "ve_short": VESDE(0.05, 3.0)}


def _rate(sde, t: float) -> float:
    return float(sde.diffusion(t) / sde.std(t)) ** 2


@pytest.mark.parametrize("name", list(IS_SDES))
def test_importance_cdf_is_the_integral_of_g2_over_s2(name):
    """CDF of q ~ g^2/s^2 (through the SDE's log-SNR) against scipy's quadrature; its inverse; the same for a
    subclass, whose inverse log-SNR is the SDE's bisection instead of the closed form."""
    from scipy.integrate import quad

    from scoresde.importance import LikelihoodImportance

    sde, eps = IS_SDES[name], 1e-5
    breaks = [1e-4, 1e-3, 1e-2, 0.1]
    integral = lambda a, b: quad(lambda s: _rate(sde, s), a, b, points=[p for p in breaks if a < p < b],  # noqa: E731
                                 limit=200, epsabs=0, epsrel=1e-10)[0]
    z = integral(eps, 1.0)
    ts = torch.tensor([2e-5, 1e-4, 3e-3, 0.05, 0.5, 0.9], dtype=torch.float64)
    expected = torch.tensor([integral(eps, float(t)) / z for t in ts], dtype=torch.float64)
    u = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    subclass = type(name, (type(sde),), {"log_mean_coef": lambda self, t: type(sde).log_mean_coef(self, t)})
    draws = []
    for s in (sde, subclass(**sde._config())):
        q = LikelihoodImportance(s, eps)
        assert q.normalizer == pytest.approx(z, rel=1e-8)
        torch.testing.assert_close(q.cdf(ts), expected, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(q.cdf(q.icdf(u)), u, rtol=0, atol=1e-12)
        rates = torch.tensor([_rate(sde, float(t)) for t in ts], dtype=torch.float64)
        torch.testing.assert_close(q.density(ts), rates / z)
        draws.append(q.icdf(u))
    torch.testing.assert_close(draws[1], draws[0], rtol=1e-12, atol=0)


def test_stratified_importance_puts_one_time_in_each_quantile():
    sde, eps = VPSDE(), 1e-5
    from scoresde.importance import likelihood_importance

    gen = torch.Generator().manual_seed(0)
    t = sample_time(64, eps, sampling="stratified_importance", sde=sde, generator=gen)
    assert t.dtype == torch.float32 and t.min() >= eps and t.max() <= 1.0
    strata = (likelihood_importance(sde, eps).cdf(t) * 64).floor().long()
    assert torch.equal(strata, torch.arange(64))
    with pytest.raises(ValueError, match="needs the SDE"):
        sample_time(8, eps, sampling="importance")
    with pytest.raises(ValueError, match="use it with weighting='likelihood'"):
        DSMLoss(time_sampling="importance")


def _per_example(loss: DSMLoss, score, sde, x0, generator):
    """One importance-weighted term per example, as DSMLoss.__call__ averages them."""
    t = sample_time(x0.shape[0], loss.eps, sde.T, loss.time_sampling, generator, dtype=x0.dtype, sde=sde)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return loss.per_example(score, sde, x0, t, z) * loss.time_weight(sde, t)


def _compare_time_samplings(score, sde, x0, seed):
    """Means (with standard errors) and variances of the likelihood-weighted loss under uniform and
    importance-sampled t, on the same data."""
    out = {}
    for i, sampling in enumerate(("uniform", "importance")):
        loss = DSMLoss(weighting="likelihood", reduce="sum", time_sampling=sampling)
        with torch.no_grad():
            per = _per_example(loss, score, sde, x0, torch.Generator().manual_seed(seed + i)).double()
        out[sampling] = (per.mean().item(), per.std().item() / math.sqrt(per.numel()), per.var().item())
    return out


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.slow
def test_importance_sampled_loss_is_unbiased_against_the_exact_objective(name):
    """Gaussian data N(0, s^2 I) with its exact score: the likelihood-weighted objective
    E_{t ~ U(eps, 1)}[g^2/s(t)^2 * D/2 (1 - s(t)^2 / (m^2 s^2 + s(t)^2))] by quadrature; both time samplings
    estimate it within Monte Carlo error, importance sampling with a (much) smaller variance."""
    from scipy.integrate import quad

    sde, dim, s0, n, eps = IS_SDES[name], 4, 0.5, 200_000, 1e-5
    gm = gaussian_data(dim, s0)

    def integrand(t):
        m, std = float(sde.mean_coef(t)), float(sde.std(t))
        return _rate(sde, t) * 0.5 * dim * (1 - std**2 / (m**2 * s0**2 + std**2))

    exact = quad(integrand, eps, 1.0, points=[1e-4, 1e-3, 1e-2, 0.1], limit=200)[0] / (1 - eps)
    x0 = gm.sample(n, 0.0, sde, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = _compare_time_samplings(gm.score_fn(sde), sde, x0, seed=1)
    for sampling, (mean, se, _) in res.items():
        assert abs(mean - exact) < 4 * se, (sampling, mean, exact, se)
    ratio = res["importance"][2] / res["uniform"][2]
    print(f"\n{name}: exact {exact:.4f}, uniform {res['uniform'][0]:.4f} +- {res['uniform'][1]:.4f}, "
          f"importance {res['importance'][0]:.4f} +- {res['importance'][1]:.4f}; variance ratio {ratio:.4f}")
    if name == "ve":  # g^2/s^2 is constant: q is the uniform density and the weight is 1
        assert ratio == pytest.approx(1.0, rel=0.05)
    else:
        assert ratio < 0.05


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.slow
def test_importance_sampling_on_the_mixture_oracle_and_a_small_network(name):
    """Same mean within Monte Carlo error and a smaller variance, on the non-isotropic mixture with its
    exact score, and with a small MLP trained briefly on it (eps parameterization)."""
    from scoresde.nets import MLP

    sde, dim = IS_SDES[name], 4
    gm = GaussianMixture.random(dim, 3, seed=0)
    torch.manual_seed(0)
    net = MLP(dim=dim, hidden=64, depth=2, embed_dim=32)
    score = NetworkScore(net, sde)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train = DSMLoss(time_sampling="stratified")
    for step in range(150):
        x = gm.sample(256, 0.0, sde, generator=torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        train(score, sde, x, generator=torch.Generator().manual_seed(step)).backward()
        opt.step()
    for label, fn, n in (("oracle", gm.score_fn(sde), 200_000), ("mlp", score, 100_000)):
        x0 = gm.sample(n, 0.0, sde, generator=torch.Generator().manual_seed(7))
        res = _compare_time_samplings(fn, sde, x0, seed=11)
        (mu_u, se_u, var_u), (mu_i, se_i, var_i) = res["uniform"], res["importance"]
        print(f"\n{name} {label}: uniform {mu_u:.3f} +- {se_u:.3f}, importance {mu_i:.3f} +- {se_i:.3f}, "
              f"variance ratio {var_i / var_u:.4f}")
        assert abs(mu_u - mu_i) < 4 * math.hypot(se_u, se_i)
        if name == "ve":
            assert var_i / var_u == pytest.approx(1.0, rel=0.05)
        else:
            assert var_i / var_u < 0.2


def test_importance_sampling_is_uniform_for_ve():
    """For VE, g^2/s^2 = 2 log(sigma_max/sigma_min): importance and uniform sampling draw the same times
    from the same generator, with weight 1."""
    sde, gm = VESDE(), gaussian_data(2, 1.0)
    x = gm.sample(32, 0.0, sde, generator=torch.Generator().manual_seed(0))
    a = DSMLoss(weighting="likelihood", time_sampling="importance")(
        gm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(1))
    b = DSMLoss(weighting="likelihood", time_sampling="uniform")(
        gm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
