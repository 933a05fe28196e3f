"""Exact likelihood through the probability-flow ODE, against the oracle's closed form."""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.likelihood import bits_per_dim, log_likelihood
from scoresde.solvers import ProbabilityFlowODE

pytestmark = pytest.mark.usefixtures("one_thread")

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}


def mixture(dim):
    return GaussianMixture.random(dim, 3, std_range=(0.2, 0.7), spread=1.0, seed=1)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("dim", [2, 4])
def test_exact_estimator_matches_the_oracle(dim, sde_name):
    """log p_eps(x) within 1e-2 nats once the known prior mismatch is removed: the method scores
    z_T under the SDE's prior; the oracle knows the true p_T."""
    sde, gm = SDES[sde_name], mixture(dim)
    x = gm.sample(24, 0.0, sde, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = log_likelihood(gm.score_fn(sde), sde, x, estimator="exact", rtol=1e-6, atol=1e-6, eps=1e-5)
    true_pT = gm.log_prob(res.z, sde.T, sde)
    corrected = res.logp - res.prior_logp + true_pT
    exact = gm.log_prob(x, 1e-5, sde)
    assert (corrected - exact).abs().max() < 1e-2
    mismatch = (res.prior_logp - true_pT).abs().mean().item()
    print(f"\n{sde_name} D={dim}: max error {float((corrected - exact).abs().max()):.2e} nats, "
          f"prior mismatch {mismatch:.2e} nats, nfe {res.nfe}")
    assert mismatch < 0.05  # the prior is a close but not exact stand-in for p_T
    assert res.nfe > 0 and res.logp.shape == (24,) and res.z.shape == x.shape and not res.failed


@pytest.mark.parametrize("estimator", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(estimator):
    """On a non-isotropic mixture (isotropic components make Rademacher exact) the mean over 200
    probe draws is within 3 standard errors of the exact-divergence value."""
    sde, gm = VPSDE(), mixture(4)
    point = gm.sample(1, 0.0, sde, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = point.expand(200, 4).clone()
    exact = log_likelihood(gm.score_fn(sde), sde, point, estimator="exact", rtol=1e-7, atol=1e-7).logp
    est = log_likelihood(gm.score_fn(sde), sde, x, estimator=estimator, rtol=1e-7, atol=1e-7,
                         generator=torch.Generator().manual_seed(1)).logp
    se = est.std() / math.sqrt(200)
    assert est.std() > 1e-3  # the estimator is really random here
    assert (est.mean() - exact[0]).abs() < 3 * se, (est.mean(), exact, se)


def test_latent_decodes_back_to_the_data():
    sde, gm = VPSDE(), mixture(2)
    x = gm.sample(16, 1e-5, sde, generator=torch.Generator().manual_seed(2))
    res = log_likelihood(gm.score_fn(sde), sde, x, rtol=1e-6, atol=1e-6)
    back = ProbabilityFlowODE(rtol=1e-6, atol=1e-6, eps=1e-5).decode(gm.score_fn(sde), sde, res.z)
    assert (back - x).abs().max() < 1e-3


def test_per_example_values_do_not_depend_on_the_batch():
    sde, gm = VESDE(), mixture(2)
    x = gm.sample(6, 0.0, sde, generator=torch.Generator().manual_seed(3))
    seeds = [11, 12, 13, 14, 15, 16]
    full = log_likelihood(gm.score_fn(sde), sde, x, seeds=seeds, per_example=True).logp
    part = log_likelihood(gm.score_fn(sde), sde, x[[4, 1]], seeds=[15, 12], per_example=True).logp
    assert torch.equal(part, full[[4, 1]])
    batched = log_likelihood(gm.score_fn(sde), sde, x, seeds=seeds).logp
    torch.testing.assert_close(batched, full, rtol=0, atol=1e-2)


def test_bits_per_dim_of_a_known_density():
    """Integer data whose dequantized, scaled version has a known density: a Gaussian mixture
    oracle for the continuous density, then bits/dim = -log p / (D ln 2) + log2(levels / 2)."""
    sde, gm = VPSDE(), GaussianMixture([1.0], torch.zeros(1, 3), (0.3 * torch.eye(3))[None])
    k = torch.randint(0, 17, (8, 3), generator=torch.Generator().manual_seed(0))
    res = bits_per_dim(gm.score_fn(sde), sde, k, levels=17, data_range=(-1, 1), estimator="exact",
                       seeds=range(8), rtol=1e-6, atol=1e-6)
    expected = -res.logp / (3 * math.log(2)) + math.log2(17 / 2)
    torch.testing.assert_close(res.bpd, expected)
    assert res.bpd.shape == (8,) and torch.isfinite(res.bpd).all()
    # the dequantized points of example i depend only on seed i
    again = bits_per_dim(gm.score_fn(sde), sde, k[[3]], levels=17, estimator="exact", seeds=[3],
                         rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(again.bpd, res.bpd[[3]], rtol=0, atol=1e-4)


def test_divergent_examples_are_reported_not_fatal():
    sde, gm = VPSDE(), mixture(2)
    exact = gm.score_fn(sde)

    def explodes_for_large_x(x, t):
        s = exact(x, t)
        return torch.where((x[:, :1] > 50).expand_as(s), torch.nan, s)

    x = torch.tensor([[0.1, 0.2], [60.0, 0.0], [-0.3, 0.4]])
    with pytest.warns(RuntimeWarning, match="diverged for 1 of 3 examples"):
        res = log_likelihood(explodes_for_large_x, sde, x, rtol=1e-3, atol=1e-3)
    assert res.failed == [1]
    assert torch.isnan(res.logp[1]) and torch.isfinite(res.logp[[0, 2]]).all()


def test_bad_input_is_rejected_clearly():
    sde, gm = VPSDE(), mixture(2)
    with pytest.raises(ValueError, match="non-integer"):
        bits_per_dim(gm.score_fn(sde), sde, torch.tensor([[0.5, 1.0]]), levels=17)
    with pytest.raises(ValueError, match=r"must lie in \[0, 17\)"):
        bits_per_dim(gm.score_fn(sde), sde, torch.tensor([[3, 17]]), levels=17)
    with pytest.raises(ValueError, match="NaN"):
        log_likelihood(gm.score_fn(sde), sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="batch dimension"):
        log_likelihood(gm.score_fn(sde), sde, torch.zeros(2))
    with pytest.raises(ValueError, match="valid: rademacher, gaussian, exact"):
        log_likelihood(gm.score_fn(sde), sde, torch.zeros(1, 2), estimator="skilling")
    with pytest.raises(ValueError, match="valid: RK23, RK45"):
        log_likelihood(gm.score_fn(sde), sde, torch.zeros(1, 2), method="rk4")
    with pytest.raises(ValueError, match="for integer data use bits_per_dim"):
        log_likelihood(gm.score_fn(sde), sde, torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("estimator,per_example",
                         [("rademacher", False), ("exact", False), ("gaussian", True)])
def test_a_score_of_the_wrong_shape_is_refused_at_the_first_call(estimator, per_example):
    """A score that drops a dimension (it would broadcast into the drift) stops the likelihood at its
    first evaluation with both shapes named."""
    sde, gm = VPSDE(), mixture(2)
    exact, calls = gm.score_fn(sde), []

    def first_coordinate_only(x, t):
        calls.append(1)
        return exact(x, t)[:, :1]

    with pytest.raises(ValueError, match=r"returned shape \((3|1), 1\) for x of shape \(\1, 2\)"):
        log_likelihood(first_coordinate_only, sde, torch.zeros(3, 2), estimator=estimator,
                       per_example=per_example)
    assert len(calls) == 1
