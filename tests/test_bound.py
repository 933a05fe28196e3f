"""The variational bound (denoising form) against the Gaussian-mixture oracle's exact answers."""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.bound import bound_bits_per_dim, variational_bound
from scoresde.likelihood import bits_per_dim

pytestmark = pytest.mark.usefixtures("one_thread")

#: the paper's SDEs (p_T is the prior up to ~1e-5 nats) and short ones whose p_T is measurably not the prior
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "vp_short": VPSDE(0.1, 1.0),
        "subvp_short": SubVPSDE(0.1, 1.5), "ve_short": VESDE(0.01, 1.0)}


def mixture(dim=2):
    return GaussianMixture.random(dim, 3, std_range=(0.2, 0.7), spread=1.0, seed=1)


@pytest.mark.parametrize("name", list(SDES))
def test_bound_exceeds_the_exact_nll_by_the_prior_kl(name):
    """With the exact score, averaged over x ~ p_0: E[L(x)] = E_{p_eps}[-log p_eps] + KL(p_T || prior).
    The bound is checked against the oracle's exact NLL of x_eps ~ p_0eps(.|x) and its KL, within 4
    standard errors; where the KL is far above the error, the bound is strictly above the NLL."""
    sde, gm, n, eps = SDES[name], mixture(), 50_000, 1e-5
    g = torch.Generator().manual_seed(0)
    x = gm.sample(n, 0.0, sde, generator=g, dtype=torch.float64)
    res = variational_bound(gm.score_fn(sde), sde, x, time_samples=16, eps=eps, generator=g)
    x_eps, _, _ = sde.marginal_sample(x, torch.full((n,), eps, dtype=torch.float64), generator=g)
    gap = res.nll - (-gm.log_prob(x_eps, eps, sde))
    kl, kl_se = gm.prior_kl(sde, 100_000, generator=g)
    se = math.hypot(float(gap.std()) / math.sqrt(n), kl_se)
    print(f"\n{name}: bound - NLL = {float(gap.mean()):.4f} +- {se:.4f} nats, KL(p_T || prior) {kl:.4f}")
    assert abs(float(gap.mean()) - kl) < 4 * se
    if kl > 8 * se:
        assert float(gap.mean()) > 4 * se
    assert res.nfe == 16 and res.nll.shape == (n,) and res.nll.dtype == torch.float64
    torch.testing.assert_close(res.nll, res.prior + res.diffusion + res.kernel_entropy)


def test_a_worse_score_gives_a_larger_bound():
    """The bound is the likelihood-weighted DSM loss plus constants: perturbing the exact score raises it
    (paired over the same times and noise)."""
    sde, gm = VPSDE(), mixture()
    x = gm.sample(4000, 0.0, sde, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = gm.score_fn(sde)
    kw = {"time_samples": 8, "seeds": range(4000)}
    good = variational_bound(exact, sde, x, **kw).nll
    bad = variational_bound(lambda y, t: 0.9 * exact(y, t), sde, x, **kw).nll
    diff = bad - good
    assert diff.mean() > 4 * diff.std() / math.sqrt(diff.numel())


def test_time_samplings_estimate_the_same_bound():
    sde, gm, n = SubVPSDE(), mixture(), 20_000
    x = gm.sample(n, 0.0, sde, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    values = {}
    for i, sampling in enumerate(("uniform", "stratified", "importance", "stratified_importance")):
        nll = variational_bound(gm.score_fn(sde), sde, x, time_samples=4, time_sampling=sampling,
                                generator=torch.Generator().manual_seed(10 + i)).nll
        values[sampling] = (float(nll.mean()), float(nll.std()) / math.sqrt(n))
    ref, ref_se = values["stratified_importance"]
    print("\n" + ", ".join(f"{k}: {m:.3f} +- {s:.3f}" for k, (m, s) in values.items()))
    for mean, se in values.values():
        assert abs(mean - ref) < 4 * math.hypot(se, ref_se)
    assert values["stratified_importance"][1] < values["stratified"][1] / 3


def test_prior_kl_of_a_gaussian_matches_the_closed_form():
    """One Gaussian component: p_T = N(m mu, m^2 Sigma + s^2 I); KL to N(0, sigma_p^2 I) in closed form."""
    sde = VPSDE(0.1, 1.0)
    mu, cov = torch.tensor([0.5, -1.0]), torch.tensor([[0.3, 0.1], [0.1, 0.2]])
    gm = GaussianMixture([1.0], mu[None], cov[None])
    m, s, var_p = float(sde.mean_coef(1.0)), float(sde.std(1.0)), sde.prior_std**2
    c = m**2 * cov.double() + s**2 * torch.eye(2, dtype=torch.float64)
    exact = 0.5 * (torch.trace(c) / var_p + m**2 * mu.double().pow(2).sum() / var_p - 2
                   + 2 * math.log(var_p) - torch.logdet(c))
    kl, se = gm.prior_kl(sde, 200_000, generator=torch.Generator().manual_seed(0))
    assert abs(kl - float(exact)) < 4 * se and se < 0.01 * float(exact)


def test_bound_bits_per_dim_sits_beside_the_ode():
    """Integer data: the bound uses the same dequantized points as the ODE's bits_per_dim (the closed-form
    prior term recovers |x|^2), per-example values do not depend on the batch, and the bits/dim offset is
    log2(levels / (hi - lo))."""
    sde, gm = VPSDE(), GaussianMixture([1.0], torch.zeros(1, 3), (0.3 * torch.eye(3))[None])
    k = torch.randint(0, 17, (6, 3), generator=torch.Generator().manual_seed(0))
    seen = []

    def recording(x, t):
        if not seen:
            seen.append(x.detach().clone())
        return gm.score(x, t, sde)

    ode = bits_per_dim(recording, sde, k, levels=17, seeds=range(6), estimator="exact", rtol=1e-6, atol=1e-6)
    res = bound_bits_per_dim(gm.score_fn(sde), sde, k, levels=17, seeds=range(6), time_samples=64)
    m_T, s_T = float(sde.mean_coef(1.0)), float(sde.std(1.0))
    norms = (2 * res.prior - 3 * math.log(2 * math.pi) - 3 * s_T**2) / m_T**2
    torch.testing.assert_close(norms, seen[0].double().pow(2).sum(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.bpd, res.nll / (3 * math.log(2)) + math.log2(17 / 2))
    again = bound_bits_per_dim(gm.score_fn(sde), sde, k[[4, 1]], levels=17, seeds=[4, 1], time_samples=64)
    torch.testing.assert_close(again.bpd, res.bpd[[4, 1]])
    print(f"\nODE {ode.bpd.mean():.4f} bits/dim, bound {res.bpd.mean():.4f}")
    assert torch.isfinite(res.bpd).all() and torch.isfinite(ode.bpd).all()


def test_bad_input_is_rejected_clearly():
    sde, gm = VPSDE(), mixture()
    score = gm.score_fn(sde)
    cases = [
        (dict(x=torch.zeros(2)), "batch dimension"),
        (dict(x=torch.zeros(1, 2, dtype=torch.long)), "use bound_bits_per_dim"),
        (dict(x=torch.tensor([[float("nan"), 0.0]])), "NaN"),
        (dict(time_samples=0), "time_samples must be >= 1"),
        (dict(time_sampling="sobol"), "valid: uniform, stratified, importance"),
        (dict(eps=0.0), "eps must lie in"),
        (dict(seeds=[1, 2, 3]), "one seed per example"),
    ]
    for kwargs, match in cases:
        x = kwargs.pop("x", torch.zeros(2, 2))
        with pytest.raises(ValueError, match=match):
            variational_bound(score, sde, x, **kwargs)
    with pytest.raises(ValueError, match=r"must lie in \[0, 17\)"):
        bound_bits_per_dim(score, sde, torch.tensor([[3, 17]]), levels=17)


def test_likelihood_presets_and_the_app_report_the_bound(tmp_path):
    """experiment=digits_likelihood trains with the importance-sampled likelihood weighting, logs the bound
    at validation (val/bound_bpd) and reports it beside the ODE's bits/dim; the CIFAR-10 preset composes."""
    from scoresde.tasks import compose_config, run_task
    from scoresde.tasks.common import validate_config

    cifar = compose_config("experiment=cifar10_subvp_ddpmpp_deep_likelihood")
    validate_config(cifar)
    assert cifar.sde._target_.endswith("SubVPSDE") and cifar.trainer.max_steps == 950001
    assert (cifar.module.loss.weighting, cifar.module.loss.time_sampling) == ("likelihood", "importance")
    assert cifar.module.lr == 2e-4 and cifar.ema.decay == 0.9999 and cifar.data.random_flip
    cfg = compose_config(
        "experiment=digits_likelihood", "threads=1", "trainer.max_steps=4", "trainer.val_check_interval=4",
        "validation.num_samples=4", "validation.bpd_examples=0", "validation.bound_samples=3",
        "validation.solver.steps=3", "task.sample=false", "likelihood.num_examples=5",
        "likelihood.bound_samples=8", "likelihood.rtol=1e-2", "likelihood.atol=1e-2",
        "trainer.log_every_n_steps=1", "progress_bar_refresh_rate=0", output_dir=tmp_path,
    )
    assert cfg.module.loss.time_sampling == "stratified_importance"
    assert cfg.data._target_.endswith("DigitsDataModule")
    metrics = run_task(cfg)
    bound = metrics["likelihood"]["bound"]
    assert bound["time_samples"] == 8 and math.isfinite(bound["bpd"]) and bound["num_nonfinite"] == 0
    assert math.isfinite(metrics["likelihood"]["bpd"])
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "val/bound_bpd" in header
    assert math.isfinite(metrics["val_bound_bpd"])
