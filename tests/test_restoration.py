"""Image restoration against exact answers: the operators' adjoints and SVDs, the oracle's posterior of a
linear-Gaussian measurement against Bayes' rule on a grid, and the posterior samplers against exact posterior
draws of the Gaussian-mixture oracle."""

import pytest
import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.evaluation import sliced_wasserstein
from scoresde.restoration import (
    AveragePool,
    Colorization,
    Dense,
    GaussianBlur,
    Identity,
    Mask,
    UniformBlur,
)
from scoresde.restoration.samplers import dps, mcgdiff, pigdm, sdedit
from scoresde.solvers import DDIM, DPMSolver, EulerMaruyama, PredictorCorrector, ProbabilityFlowODE

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


OPERATORS = {
    "dense": lambda: Dense(torch.randn(3, 5, generator=_gen(1), dtype=torch.float64)),
    "dense_rank2": lambda: Dense(torch.randn(6, 2, generator=_gen(2), dtype=torch.float64).repeat(1, 2)),
    "mask": lambda: Mask(torch.rand(1, 4, 6, generator=_gen(3)) < 0.5, (2, 4, 6)),
    "identity": lambda: Identity((2, 3, 3)),
    "colorization": lambda: Colorization((3, 4, 4)),
    "pool": lambda: AveragePool(2, (2, 4, 6)),
    "gaussian_blur": lambda: GaussianBlur(1.0, (1, 8, 8)),
    "uniform_blur": lambda: UniformBlur(3, (2, 5, 7)),
}


def _columns(fn, n):
    """The matrix whose columns are ``fn`` of the unit vectors."""
    return fn(torch.eye(n, dtype=torch.float64)).reshape(n, -1).T


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_adjoint_and_svd(name):
    op = OPERATORS[name]()
    x = torch.randn(4, *op.in_shape, dtype=torch.float64, generator=_gen(4))
    y = torch.randn(4, *op.out_shape, dtype=torch.float64, generator=_gen(5))
    # <A x, y> = <x, A^T y>
    torch.testing.assert_close((op(x) * y).sum(), (x * op.adjoint(y)).sum())
    # U and V orthogonal, U diag(S) V^T = A, A^+ the pseudo-inverse
    u, v, r = _columns(op.u, op.out_dim), _columns(op.v, op.in_dim), op.rank
    torch.testing.assert_close(u.T @ u, torch.eye(op.out_dim, dtype=torch.float64))
    torch.testing.assert_close(v.T @ v, torch.eye(op.in_dim, dtype=torch.float64))
    assert (op.singular_values > 0).all()
    a = op.matrix()
    torch.testing.assert_close(u[:, :r] @ torch.diag(op.singular_values) @ v[:, :r].T, a)
    torch.testing.assert_close(op.vt(op.v(x.reshape(4, -1))), x.reshape(4, -1))
    expected = y.reshape(4, -1) @ torch.linalg.pinv(a, rtol=1e-6).T
    torch.testing.assert_close(op.pinv(y).reshape(4, -1), expected, rtol=1e-6, atol=1e-8)


def test_operators_compute_what_they_say():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    torch.testing.assert_close(AveragePool(2, (2, 4, 6))(x), torch.nn.functional.avg_pool2d(x, 2))
    blur = GaussianBlur(1.0, (2, 4, 6))
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0, dtype=torch.float64) ** 2)
    k = k / k.sum()
    conv = torch.nn.functional.conv2d(x.reshape(2, 1, 4, 6), (k[:, None] * k[None, :])[None, None], padding=3)
    torch.testing.assert_close(blur(x), conv.reshape(1, 2, 4, 6))
    box = torch.nn.functional.conv2d(x.reshape(2, 1, 4, 6), torch.full((1, 1, 3, 3), 1 / 9.0,
                                                                       dtype=torch.float64), padding=1)
    torch.testing.assert_close(UniformBlur(3, (2, 4, 6))(x), box.reshape(1, 2, 4, 6))
    rgb = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(Colorization((3, 2, 2))(rgb), rgb.sum(1, keepdim=True) / 3**0.5)
    mask = torch.tensor([[True, False], [False, True]])
    torch.testing.assert_close(Mask(mask, (1, 2, 2))(rgb[:, :1]), rgb[:, 0][:, mask])


def test_operator_bad_input():
    with pytest.raises(ValueError, match="divisible by k"):
        AveragePool(3, (1, 8, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        Mask(torch.ones(3, dtype=torch.bool), (1, 2, 2))
    with pytest.raises(ValueError, match="bool"):
        Mask(torch.ones(2, 2), (1, 2, 2))
    with pytest.raises(ValueError, match="3-channel"):
        Colorization((1, 4, 4))
    with pytest.raises(ValueError, match="acts on data of shape"):
        AveragePool(2, (1, 8, 8))(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="measures shape"):
        AveragePool(2, (1, 8, 8)).pinv(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianBlur(0.0, (1, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        UniformBlur(2, (1, 8, 8))


# --- the oracle's posterior ----------------------------------------------------------------------------
def test_posterior_matches_bayes_on_a_grid():
    """p(x | y) ∝ p(x) N(y; A x, sigma^2): the posterior's density against the normalised product on a
    2-D grid, for an ill-posed (rank 1) A with two rows."""
    sde, gm = VPSDE(), GaussianMixture.random(2, 3, spread=0.8, seed=0)
    a = torch.tensor([[1.0, 0.5], [2.0, 1.0]], dtype=torch.float64)
    y, sigma = torch.tensor([0.4, 0.7], dtype=torch.float64), 0.3
    post = gm.posterior(a, y, sigma)
    grid = torch.linspace(-4, 4, 801, dtype=torch.float64)
    xs = torch.cartesian_prod(grid, grid)
    log_joint = gm.log_prob(xs, 0.0, sde) - 0.5 * ((xs @ a.T - y) ** 2).sum(1) / sigma**2
    joint = log_joint.exp().reshape(801, 801)
    z = torch.trapezoid(torch.trapezoid(joint, grid, dim=1), grid)
    torch.testing.assert_close(post.log_prob(xs, 0.0, sde).exp(), joint.reshape(-1) / z, rtol=1e-5, atol=1e-8)


def test_noiseless_posterior_is_the_conditional_in_the_svd_basis():
    """sigma_y = 0: the posterior lies on {A x = y}; in V's basis it is the exact conditional of the rotated
    prior given the measured coordinates."""
    gm = GaussianMixture.random(4, 3, seed=1)
    op = Dense(torch.randn(3, 2, generator=_gen(6), dtype=torch.float64).repeat(1, 2))  # rank 2 of 4
    x = gm.sample(1, 0.0, VPSDE(), generator=_gen(7), dtype=torch.float64)
    y = op(x)
    post = gm.posterior(op, y, 0.0)
    v = _columns(op.v, 4)
    c = op.vt(x)[0]
    cond = gm.transformed(v.T).condition(c, torch.arange(4) < 2)
    draws = post.sample(200_000, 0.0, VPSDE(), generator=_gen(8), dtype=torch.float64)
    torch.testing.assert_close(op(draws), y.expand(200_000, 3), rtol=0, atol=1e-6)  # on {A x = y}
    mean, cov = post.moments(0.0, VPSDE())
    cmean, ccov = cond.moments(0.0, VPSDE())
    torch.testing.assert_close((v.T @ mean)[2:], cmean)
    torch.testing.assert_close((v.T @ cov @ v)[2:, 2:], ccov)
    torch.testing.assert_close(post.weights, cond.weights)


# --- the posterior samplers against the exact posterior ----------------------------------------------------
N = 2000
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}


def _pc(steps=200, denoise=False):
    return PredictorCorrector(steps=steps, corrector="none", denoise=denoise)


def sw(a, b):
    return sliced_wasserstein(a, b, num_projections=200, generator=_gen(0))


def restoration_problem(dim, sde, sigma_y, n=N):
    """A mixture prior, an ill-posed operator (2-D: one row, rank 1; 16-D: 8 rows of rank 4), a measurement
    of a prior draw, ``n`` copies of it, and the exact posterior of ``p_eps`` with two sets of ``n`` exact
    draws, the noise floor (mean SW-2 between 4 pairs of ``n`` exact draws: the same sample size as the
    sampler's) and the prior's distance to the exact draws."""
    gm = GaussianMixture.random(dim, 3, std_range=(0.1, 0.6), spread=0.8 if dim == 2 else 0.5, seed=0)
    if dim == 2:
        a = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    else:
        a = torch.randn(dim // 2, dim // 4, generator=_gen(11), dtype=torch.float64).repeat(1, 4) / 2
    op = Dense(a)
    x = gm.sample(1, 0.0, sde, generator=_gen(3))
    y = (op(x) + sigma_y * torch.randn(1, op.out_dim, generator=_gen(4))).float()
    target = gm.diffused(sde.sampling_eps, sde).posterior(op, y[0], sigma_y)
    draws = [target.sample(n, 0.0, sde, generator=_gen(100 + i)) for i in range(10)]
    floor = sum(sw(draws[2 * i], draws[2 * i + 1]) for i in range(1, 5)) / 4
    prior = gm.sample(n, sde.sampling_eps, sde, generator=_gen(1))
    return gm, op, y.expand(n, -1).clone(), draws[:2], floor, _distance(prior, draws[:2])


def _distance(x, exact):
    return sum(sw(x, e) for e in exact) / len(exact)


@pytest.mark.parametrize("dim,sde_name,sigma_y,particles,rows,steps", [
    # each row its own population (independent draws), the ancestral kernel on the log-SNR grid.
    # 2-D, 200 steps, measured over generator seeds 7-9: vp 0.05 0.85-1.06x with 8 particles; VE 0.5
    # 1.32-1.61x (1.36x at 7). With pc's reverse-diffusion kernel on the uniform grid (seed 7): vp 0.05 1.15x
    # (8 particles), 0.76x (32); sub-VP 0.5 1.49x (8), 1.26x (32); VE 0.5 1.54x (8)
    (2, "vp", 0.05, 8, N, 200),
    (2, "ve", 0.5, 8, N, 200),
    # 16-D, rank 4 of 16 (8 rows): the bias is SMC's finite-particle bias, mostly in the posterior's
    # mixture weights (vp 0.05, 500 rows, 128 particles, seed 8: 0.722 of the draws in the main component
    # against 0.767; 256 particles: 0.768), and it falls toward the floor as particles grow. SW / floor,
    # 100 steps, seed 7 (2,000 rows): sub-VP noiseless 7.29x (8 particles), 2.70x (32), 1.20x (128); vp
    # 0.05 7.48x, 3.38x, 2.81x; vp 0.5 2.05x, 1.46x, 1.23x. 500 rows, 128 particles, seeds 7/8/9: sub-VP
    # noiseless 0.96/1.07/1.10x, vp 0.05 1.21/1.69/1.89x, vp 0.5 0.93/0.99/0.74x; 256 particles vp 0.05
    # 0.84x (seed 8). 400 steps are no better at a fixed particle count (sub-VP noiseless, 2,000 rows: 8.01x
    # with 8, 4.40x with 32; 500 rows: 2.10x with 32, 1.51x with 128 (100 steps: 0.96x); vp 0.05 1.65x with
    # 32, 1.26x with 128 (100 steps: 1.21x)). The former pooled test (one population of 2 x 2,000 particles,
    # 200 steps: 1.78-10.9x over seeds 7-10) compared draws resampled from one population (shared ancestors)
    # with independent exact draws; one population per row gives independent draws, as the floor assumes.
    # Asserted: 250 rows of 256 particles
    # (the floor of 250 exact draws), 100 steps, ~20 s each; measured at seeds 7/8/9: sub-VP noiseless
    # 0.92/0.93/0.87x, vp 0.05 0.83/0.83/1.25x, vp 0.5 0.61/0.92/0.78x (the prior: 7.3x, 7.2x, 4.0x)
    (16, "subvp", 0.0, 256, 250, 100),
    (16, "vp", 0.05, 256, 250, 100),
    (16, "vp", 0.5, 256, 250, 100),
])
@pytest.mark.slow
def test_smc_samples_the_exact_posterior(dim, sde_name, sigma_y, particles, rows, steps):
    sde = SDES[sde_name]
    gm, op, y, exact, floor, prior = restoration_problem(dim, sde, sigma_y, rows)
    sampler = DDIM(steps=steps, eta=1.0, time_grid="logsnr", denoise=False)
    x = mcgdiff(sampler, gm.score_fn(sde), sde, op, y, sigma_y, particles=particles, pool=False,
                generator=_gen(7))
    assert x.shape == (rows, dim) and torch.isfinite(x).all()
    dist = _distance(x, exact)
    print(f"smc {dim}-D {sde_name} sigma_y={sigma_y}: SW2 {dist:.4f}, floor {floor:.4f} "
          f"({dist / floor:.2f}x; prior {prior / floor:.1f}x)")
    assert dist <= 1.5 * floor, f"SW2 {dist:.4f} vs noise floor {floor:.4f}"
    if sigma_y == 0:
        torch.testing.assert_close(op(x), y, rtol=0, atol=1e-4)  # on {A x = y}


@pytest.mark.parametrize("method", ["dps", "pigdm"])
@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.slow
def test_dps_and_pigdm_are_biased_but_informed(method, dim):
    """DPS and PiGDM approximate p(y | x_t): their draws are measurably off the exact posterior (measured, VP,
    sigma_y = 0.05, 200 pc steps: DPS (step 0.1) 9.2x the floor in 2-D, 6.6x in 16-D; PiGDM 11.7x and
    12.6x; the prior 96x and 21x), yet much closer to it than the prior is."""
    sde, sigma_y = SDES["vp"], 0.05
    gm, op, y, exact, floor, prior = restoration_problem(dim, sde, sigma_y)
    if method == "dps":
        x = dps(_pc(), gm.score_fn(sde), sde, op, y, step_size=0.1, generator=_gen(7))
    else:
        x = pigdm(_pc(), gm.score_fn(sde), sde, op, y, sigma_y, generator=_gen(7))
    dist = _distance(x, exact)
    print(f"{method} {dim}-D: SW2 {dist:.4f}, floor {floor:.4f} ({dist / floor:.2f}x; "
          f"prior {prior / floor:.1f}x)")
    assert dist > 3 * floor  # biased (if this fails, the method became exact here: update the docs)
    assert dist < prior / (5 if dim == 2 else 1.4)


@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.slow
def test_pigdm_ddim_algorithm(dim):
    """PiGDM's Algorithm 1 (the guidance added to each DDIM step, VE-normalised weight m(t') m(t) r_t^2)
    lands far closer to the exact posterior than the guided score on pc (measured, VP, sigma_y = 0.05, 200
    ancestral DDIM steps on the uniform grid, seed 7: 1.36x the floor in 2-D, 1.99x in 16-D; the log-SNR
    grid 1.30x and 6.39x); still an approximation, bounded here at 3x."""
    sde, sigma_y = SDES["vp"], 0.05
    gm, op, y, exact, floor, prior = restoration_problem(dim, sde, sigma_y)
    sampler = DDIM(steps=200, eta=1.0, denoise=False)
    x = pigdm(sampler, gm.score_fn(sde), sde, op, y, sigma_y, generator=_gen(7))
    dist = _distance(x, exact)
    print(f"pigdm ddim {dim}-D: SW2 {dist:.4f}, floor {floor:.4f} ({dist / floor:.2f}x; "
          f"prior {prior / floor:.1f}x)")
    assert dist < 3 * floor


def test_sdedit_from_t0():
    """t0 = 1: the input is forgotten (prior draws of p_eps); small t0: the output stays near the input."""
    sde, gm = VPSDE(), GaussianMixture.random(2, 3, spread=0.8, seed=0)
    damaged = torch.full((N, 2), 3.0)
    sampler = EulerMaruyama(steps=100, denoise=False)
    x = sdedit(sampler, gm.score_fn(sde), sde, damaged, 1.0, generator=_gen(7))
    exact = [gm.sample(N, sde.sampling_eps, sde, generator=_gen(100 + i)) for i in range(10)]
    floor = sum(sw(exact[2 * i], exact[2 * i + 1]) for i in range(1, 5)) / 4
    assert _distance(x, exact[:2]) <= 2 * floor
    near = sdedit(sampler, gm.score_fn(sde), sde, damaged, 0.02, generator=_gen(7))
    assert (near - damaged).norm(dim=1).mean() < 1.0 < 2.0 < (x - damaged).norm(dim=1).mean()
    ode = sdedit(ProbabilityFlowODE(rtol=1e-4, atol=1e-4), gm.score_fn(sde), sde, damaged[:8], 0.3,
                 generator=_gen(7), steps=10)
    assert torch.isfinite(ode).all()


def test_noiseless_measurements_are_kept_and_every_kernel_runs():
    """sigma_y = 0 with the final denoising: A x = y exactly (projection); em, pc and ancestral DDIM kernels;
    PiGDM on a few-step solver."""
    sde = VESDE()
    gm, op, y, *_ = restoration_problem(2, sde, 0.0)
    y = y[:16]
    for sampler in (EulerMaruyama(steps=20), _pc(20, denoise=True), DDIM(steps=20, eta=1.0)):
        x = mcgdiff(sampler, gm.score_fn(sde), sde, op, y, 0.0, particles=4, generator=_gen(0))
        torch.testing.assert_close(op(x), y, rtol=0, atol=1e-5)
    x = pigdm(DPMSolver(steps=10), gm.score_fn(sde), sde, op, y, 0.0, generator=_gen(0))
    assert torch.isfinite(x).all()


def test_restoration_bad_input():
    sde, gm = VPSDE(), GaussianMixture.random(2, 2, seed=0)
    op, y = Dense(torch.tensor([[1.0, 0.5]])), torch.zeros(4, 1)
    em = EulerMaruyama(steps=4)
    with pytest.raises(ValueError, match="sigma_y must be >= 0"):
        mcgdiff(em, gm.score_fn(sde), sde, op, y, -0.1)
    with pytest.raises(ValueError, match="measures shape"):
        mcgdiff(em, gm.score_fn(sde), sde, op, torch.zeros(4, 2), 0.1)
    with pytest.raises(ValueError, match="stochastic sampler"):
        mcgdiff(ProbabilityFlowODE(), gm.score_fn(sde), sde, op, y, 0.1)
    with pytest.raises(ValueError, match="corrector=none"):
        dps(PredictorCorrector(steps=4), gm.score_fn(sde), sde, op, y)
    with pytest.raises(ValueError, match="eta > 0"):
        mcgdiff(DDIM(steps=4), gm.score_fn(sde), sde, op, y, 0.1)
    with pytest.raises(ValueError, match="supports the em, pc and ode samplers, not DPMSolver"):
        dps(DPMSolver(steps=4), gm.score_fn(sde), sde, op, y)
    with pytest.raises(ValueError, match=r"t0 must lie in \(0, 1\]"):
        sdedit(em, gm.score_fn(sde), sde, torch.zeros(4, 2), 1.5)
    with pytest.raises(ValueError, match="particles must be >= 1"):
        mcgdiff(em, gm.score_fn(sde), sde, op, y, 0.1, particles=0)
