"""Samplers against the exact marginals of Gaussian mixtures (the oracle)."""

import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.evaluation import sliced_wasserstein
from scoresde.solvers import (
    CORRECTORS,
    DDIM,
    PREDICTORS,
    SDE_METHODS,
    DPMSolver,
    EulerMaruyama,
    Heun,
    PredictorCorrector,
    ProbabilityFlowODE,
    ReverseSDESolver,
    Sampler,
    SamplingError,
    tweedie_denoise,
)
from scoresde.solvers.base import CountingScore
from scoresde.solvers.pc import Step

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
N = 4000


def mixture(dim):
    """Non-isotropic, overlapping components (stds 0.1-0.6), unequal weights."""
    return GaussianMixture.random(dim, 3, std_range=(0.1, 0.6), spread=0.8 if dim == 2 else 0.5, seed=0)


def sw(a, b):
    return sliced_wasserstein(a, b, num_projections=400, generator=torch.Generator().manual_seed(0))


_REFERENCE = {}


def reference(dim, name):
    """Exact draws of p_eps and the noise floor: the mean SW-2 between 10 pairs of exact draws of
    N points each. (A single pair is a poor floor: with separated modes SW-2 is dominated by the
    random component counts, and one pair's value varies by +-35%.)"""
    if (dim, name) not in _REFERENCE:
        sde, gm = SDES[name], mixture(dim)
        draws = [gm.sample(N, sde.sampling_eps, sde, generator=torch.Generator().manual_seed(100 + i))
                 for i in range(20)]
        floor = sum(sw(draws[2 * i], draws[2 * i + 1]) for i in range(10)) / 10
        _REFERENCE[dim, name] = draws[:5], floor
    return _REFERENCE[dim, name]


SOLVERS = {
    "em": lambda: EulerMaruyama(steps=1000, denoise=False),
    "pc": lambda: PredictorCorrector(predictor="reverse_diffusion", corrector="langevin", steps=500,
                                     denoise=False),
    "ode": lambda: ProbabilityFlowODE(rtol=1e-5, atol=1e-5, denoise=False),
}


@pytest.mark.parametrize("solver_name", list(SOLVERS))
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("dim", [2, 16])
def test_samples_match_the_exact_marginal(dim, sde_name, solver_name):
    sde, gm = SDES[sde_name], mixture(dim)
    solver = SOLVERS[solver_name]()
    x = solver.sample(gm.score_fn(sde), sde, (N, dim), generator=torch.Generator().manual_seed(7))
    assert x.shape == (N, dim) and torch.isfinite(x).all()
    exact, floor = reference(dim, sde_name)
    dist = sum(sw(x, e) for e in exact) / len(exact)
    assert dist <= 1.5 * floor, f"SW2 {dist:.4f} vs noise floor {floor:.4f}"
    # mixture weights: mean posterior responsibility of the samples, within MC error
    resp = gm.responsibilities(x, sde.sampling_eps, sde).mean(0)
    se = torch.sqrt(gm.weights * (1 - gm.weights) / N)
    assert ((resp - gm.weights).abs() < 4 * se + 0.005).all(), (resp, gm.weights)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_encode_decode_round_trip(sde_name):
    sde, gm = SDES[sde_name], mixture(2)
    x = gm.sample(256, sde.sampling_eps, sde, generator=torch.Generator().manual_seed(1))
    # at the default tolerance (1e-5) nearly every point comes back to 1e-4; points between modes,
    # where the flow is most expansive, need the tighter tolerance for 1e-3 everywhere
    ode = ProbabilityFlowODE()
    err = (ode.decode(gm.score_fn(sde), sde, ode.encode(gm.score_fn(sde), sde, x)) - x).abs().amax(1)
    assert err.median() < 1e-4
    ode = ProbabilityFlowODE(rtol=1e-6, atol=1e-6)
    z = ode.encode(gm.score_fn(sde), sde, x)
    assert ode.nfe > 0
    # the latent is (close to) a prior draw
    assert abs(z.std().item() / sde.prior_std - 1) < 0.15
    back = ode.decode(gm.score_fn(sde), sde, z)
    assert (back - x).abs().max() < 1e-3


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


# EM: torchsde evaluates the drift once at the start to check its shape (+1)
@pytest.mark.parametrize("solver,expected", [
    (EulerMaruyama(steps=37, denoise=True), 39),
    (EulerMaruyama(steps=37, denoise=False), 38),
    (PredictorCorrector(steps=25, corrector_steps=2), 25 * 3 + 1),
    (PredictorCorrector(steps=25, corrector="none", denoise=False), 25),
    (PredictorCorrector(steps=25, predictor="none", corrector="ald", denoise=False), 25),
    (ProbabilityFlowODE(rtol=1e-3, atol=1e-3), None),
])
def test_nfe_counts_real_score_calls(solver, expected):
    sde, gm = VPSDE(), mixture(2)
    counter = Counter(gm.score_fn(sde))
    solver.sample(counter, sde, (64, 2), generator=torch.Generator().manual_seed(0))
    assert solver.nfe == counter.calls
    if expected is not None:
        assert solver.nfe == expected


@pytest.mark.parametrize("make", [
    lambda: EulerMaruyama(steps=50),
    lambda: ReverseSDESolver(steps=20, method="srk"),
    lambda: PredictorCorrector(steps=50),
    lambda: PredictorCorrector(steps=50, predictor="ancestral", corrector="ald"),
])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_per_sample_seeds_are_batch_independent(make, sde_name):
    sde, gm = SDES[sde_name], mixture(2)
    seeds = list(range(8))
    batch = make().sample(gm.score_fn(sde), sde, (8, 2), seeds=seeds)
    for i in (0, 5):
        alone = make().sample(gm.score_fn(sde), sde, (1, 2), seeds=[seeds[i]])
        torch.testing.assert_close(alone[0], batch[i], rtol=1e-5, atol=1e-6)
    sub = make().sample(gm.score_fn(sde), sde, (3, 2), seeds=[5, 0, 2])
    torch.testing.assert_close(sub, batch[[5, 0, 2]], rtol=1e-5, atol=1e-6)
    # the same seeds twice give identical samples; other seeds give others
    assert torch.equal(make().sample(gm.score_fn(sde), sde, (8, 2), seeds=seeds), batch)
    assert not torch.allclose(make().sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8, 16)), batch)


def test_ode_seeds_agree_within_tolerance_and_generator_reproducible():
    sde, gm = VPSDE(), mixture(2)
    ode = ProbabilityFlowODE(rtol=1e-6, atol=1e-6)
    batch = ode.sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8))
    alone = ode.sample(gm.score_fn(sde), sde, (1, 2), seeds=[3])
    torch.testing.assert_close(alone[0], batch[3], rtol=0, atol=1e-4)
    a = ode.sample(gm.score_fn(sde), sde, (8, 2), generator=torch.Generator().manual_seed(4))
    b = ode.sample(gm.score_fn(sde), sde, (8, 2), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("corrector", list(CORRECTORS))
@pytest.mark.parametrize("predictor", list(PREDICTORS))
def test_every_predictor_corrector_combination_runs(predictor, corrector, sde_name):
    sde, gm = SDES[sde_name], mixture(2)
    pc = PredictorCorrector(predictor=predictor, corrector=corrector, steps=40)
    x = pc.sample(gm.score_fn(sde), sde, (256, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    if predictor != "none":  # 40 steps of any predictor land near the data
        mean, cov = gm.moments(sde.sampling_eps, sde)
        assert (x.mean(0).double() - mean).abs().max() < 0.3
        assert (x.var(0).double() / cov.diagonal()).sub(1).abs().max() < 0.4


@pytest.mark.parametrize("method", sorted(SDE_METHODS))
def test_torchsde_methods_and_adaptive_stepping(method):
    sde, gm = VPSDE(), mixture(2)
    solver = ReverseSDESolver(steps=100, method=method, denoise=False)
    x = solver.sample(gm.score_fn(sde), sde, (N, 2), generator=torch.Generator().manual_seed(0))
    assert solver.nfe == solver._planned_nfe()  # the progress bar's total
    exact, floor = reference(2, "vp")
    assert torch.isfinite(x).all()
    assert sw(x, exact[0]) < 3 * floor
    if method in ("euler", "heun"):
        adaptive = ReverseSDESolver(steps=50, method=method, adaptive=True, rtol=1e-2, atol=1e-2,
                                    denoise=False)
        y = adaptive.sample(gm.score_fn(sde), sde, (N, 2), generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(y).all() and sw(y, exact[0]) < 3 * floor


def test_tweedie_denoising_is_the_posterior_mean():
    """For data N(mu, v I), E[x0 | x_t] = mu + m v / (m^2 v + s^2) (x_t - m mu)."""
    sde = VESDE()
    mu, v = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.3
    gm = GaussianMixture([1.0], mu[None], (v * torch.eye(2, dtype=torch.float64))[None])
    x = torch.randn(10, 2, dtype=torch.float64)
    t = torch.full((10,), 0.3, dtype=torch.float64)
    m, s = sde.mean_coef(t)[:, None], sde.std(t)[:, None]
    expected = mu + m * v / (m**2 * v + s**2) * (x - m * mu)
    torch.testing.assert_close(tweedie_denoise(gm.score_fn(sde), sde, x, t), expected)


def test_denoise_option_shrinks_the_last_noise():
    sde, gm = VESDE(), mixture(2)
    raw = EulerMaruyama(steps=200, denoise=False).sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8))
    den = EulerMaruyama(steps=200, denoise=True).sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8))
    assert 0 < (raw - den).abs().max() < 0.05


def test_images_and_x_T():
    sde = VPSDE()
    base = GaussianMixture.random(4, 2, seed=3)
    gm = GaussianMixture(base.weights, base.means.reshape(2, 1, 2, 2), base.covs)
    x_T = torch.randn(5, 1, 2, 2)
    for solver in (EulerMaruyama(steps=20), PredictorCorrector(steps=20), ProbabilityFlowODE(rtol=1e-3)):
        x = solver.sample(gm.score_fn(sde), sde, (5, 1, 2, 2), x_T=x_T)
        assert x.shape == (5, 1, 2, 2) and torch.isfinite(x).all()
    z = ProbabilityFlowODE().encode(gm.score_fn(sde), sde, x)
    assert z.shape == x.shape


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid: euler_maruyama, reverse_diffusion, ancestral, none"):
        PredictorCorrector(predictor="heun")
    with pytest.raises(ValueError, match="valid: langevin, ald, none"):
        PredictorCorrector(corrector="hmc")
    with pytest.raises(ValueError, match="snr must be >= 0"):
        PredictorCorrector(snr=-0.1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        EulerMaruyama(steps=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        PredictorCorrector(steps=0)
    with pytest.raises(ValueError, match="valid: euler, euler_heun, heun, midpoint, milstein, srk"):
        ReverseSDESolver(method="rk4")
    with pytest.raises(ValueError, match="valid: RK23, RK45, DOP853, Radau, BDF, LSODA"):
        ProbabilityFlowODE(method="euler")
    sde, gm = VPSDE(), mixture(2)
    with pytest.raises(ValueError, match="x_T has shape"):
        EulerMaruyama(steps=5).sample(gm.score_fn(sde), sde, (4, 2), x_T=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="got 2 seeds for a batch of 4"):
        EulerMaruyama(steps=5).sample(gm.score_fn(sde), sde, (4, 2), seeds=[1, 2])
    with pytest.raises(ValueError, match=r"shape must be \(B, ...\)"):
        EulerMaruyama(steps=5).sample(gm.score_fn(sde), sde, (4,))


@pytest.mark.parametrize("solver", [EulerMaruyama(steps=50), PredictorCorrector(steps=50),
                                    ProbabilityFlowODE()])
def test_nan_stops_sampling_with_step_and_time(solver):
    sde, gm = VPSDE(), mixture(2)
    exact = gm.score_fn(sde)

    def breaks_at_half(x, t):
        s = exact(x, t)
        return s * torch.nan if float(t[0]) < 0.5 else s

    with pytest.raises(SamplingError, match=r"NaN/inf at (step \d+|t = 0\.[0-4])"):
        solver.sample(breaks_at_half, sde, (16, 2), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("solver", [EulerMaruyama(steps=50), PredictorCorrector(steps=50)])
def test_nan_check_names_the_first_bad_step_exactly(solver):
    """The finiteness check (every call by default) names the first bad call: here the 7th score
    evaluation only (the state then carries the NaN on)."""
    sde, gm = VPSDE(), mixture(2)
    exact = gm.score_fn(sde)
    calls = []

    def breaks_once(x, t):
        calls.append(float(t[0]))
        s = exact(x, t)
        return s * torch.nan if len(calls) == 7 else s

    with pytest.raises(SamplingError) as err:
        solver.sample(breaks_once, sde, (16, 2), generator=torch.Generator().manual_seed(0))
    step = 3 if isinstance(solver, PredictorCorrector) else 5  # PC: two calls per step; EM: +1 shape check
    assert f"score became NaN/inf at step {step}, t = {calls[6]:.6g}" in str(err.value)
    assert len(calls) < 7 + 16  # stopped within one window


def test_nan_in_the_state_is_caught_when_the_score_hides_it():
    sde = VPSDE()
    x_T = torch.full((4, 2), float("nan"))
    with pytest.raises(SamplingError, match="state became NaN/inf while the score stayed finite"):
        PredictorCorrector(steps=5).sample(lambda x, t: torch.nan_to_num(x) * 0, sde, (4, 2), x_T=x_T)
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        CountingScore(lambda x, t: x, check_every=0)


# --- a score of the wrong shape ---------------------------------------------------------------------
WRONG_SHAPE_SAMPLERS = {
    "em": lambda: EulerMaruyama(steps=10),
    "em_adaptive": lambda: EulerMaruyama(steps=10, adaptive=True),
    "pc": lambda: PredictorCorrector(steps=10),
    "pc_corrector_only": lambda: PredictorCorrector(steps=10, predictor="none"),
    "ode": lambda: ProbabilityFlowODE(),
    "ode_per_example": lambda: ProbabilityFlowODE(per_example=True),
    "ddim": lambda: DDIM(10),
    "dpm_solver": lambda: DPMSolver(steps=10),
    "dpm_solver_singlestep": lambda: DPMSolver(steps=10, order=3, method="singlestep"),
    "dpm_solver_adaptive": lambda: DPMSolver(method="adaptive"),
    "heun": lambda: Heun(10),
}


@pytest.mark.parametrize("name", list(WRONG_SHAPE_SAMPLERS))
def test_a_score_of_the_wrong_shape_is_refused_at_the_first_call(name):
    """A score that drops a dimension used to broadcast silently (DPM-Solver, DDIM, PC...): every
    sampler refuses it at its first evaluation, naming both shapes."""
    sde, gm = VPSDE(), mixture(2)
    exact, calls = gm.score_fn(sde), []

    def first_coordinate_only(x, t):
        calls.append(1)
        return exact(x, t)[:, :1]

    with pytest.raises(ValueError, match=r"returned shape \((4|1), 1\) for x of shape \(\1, 2\)"):
        WRONG_SHAPE_SAMPLERS[name]().sample(first_coordinate_only, sde, (4, 2),
                                            generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1


@pytest.mark.parametrize("name", [n for n in WRONG_SHAPE_SAMPLERS if "adaptive" not in n and "ode" not in n])
def test_the_progress_bar_total_is_the_number_of_evaluations(name):
    """``_planned_nfe`` (+1 for the final denoising step) is what the one progress bar counts to."""
    sde, gm = VPSDE(), mixture(2)
    solver = WRONG_SHAPE_SAMPLERS[name]()
    solver.sample(gm.score_fn(sde), sde, (4, 2), generator=torch.Generator().manual_seed(0))
    assert solver.nfe == solver._planned_nfe() + solver.denoise


def test_ode_encode_decode_refuse_a_score_of_the_wrong_shape():
    sde, gm = VPSDE(), mixture(2)
    exact = gm.score_fn(sde)
    for run in (ProbabilityFlowODE().encode, ProbabilityFlowODE().decode):
        with pytest.raises(ValueError, match=r"returned shape \(4, 2, 1\) for x of shape \(4, 2\)"):
            run(lambda x, t: exact(x, t)[..., None], sde, torch.zeros(4, 2))


# --- denoise: one meaning for every sampler -------------------------------------------------------
DENOISERS = {
    "em": lambda denoise: EulerMaruyama(steps=30, denoise=denoise),
    "pc": lambda denoise: PredictorCorrector(steps=30, denoise=denoise),
    "ode": lambda denoise: ProbabilityFlowODE(rtol=1e-4, atol=1e-4, denoise=denoise),
}


@pytest.mark.parametrize("name", list(DENOISERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_denoise_is_tweedie_on_the_final_state(name, sde_name):
    """``denoise=True`` returns exactly Tweedie's E[x_0 | x_eps] of the state that ``denoise=False``
    returns, at one more score evaluation; the default is True in the class and in its config."""
    sde, gm = SDES[sde_name], mixture(2)
    seeds = range(6)
    raw_solver, den_solver = DENOISERS[name](False), DENOISERS[name](True)
    raw = raw_solver.sample(gm.score_fn(sde), sde, (6, 2), seeds=seeds)
    den = den_solver.sample(gm.score_fn(sde), sde, (6, 2), seeds=seeds)
    t = torch.full((6,), sde.sampling_eps)
    torch.testing.assert_close(den, tweedie_denoise(gm.score_fn(sde), sde, raw, t), rtol=1e-5, atol=1e-6)
    assert den_solver.nfe == raw_solver.nfe + 1
    cls = type(den_solver)
    assert inspect.signature(cls).parameters["denoise"].default is True
    cfg = OmegaConf.load(ROOT / "conf" / "solver" / f"{name}.yaml")
    assert cfg.denoise is True and instantiate(cfg).denoise is True


def test_euler_maruyama_is_the_reverse_sde_solver_with_the_euler_scheme():
    """``EulerMaruyama`` is the Euler-Maruyama scheme only; the other torchsde schemes are
    ``ReverseSDESolver(method=...)`` (solver=reverse_sde), and the two agree bit for bit on ``euler``."""
    sde, gm = VPSDE(), mixture(2)
    assert "method" not in inspect.signature(EulerMaruyama).parameters
    with pytest.raises(TypeError, match="method"):
        EulerMaruyama(method="srk")
    em, generic = EulerMaruyama(steps=20), ReverseSDESolver(steps=20, method="euler")
    assert em.method == "euler" and isinstance(em, ReverseSDESolver)
    assert torch.equal(em.sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8)),
                       generic.sample(gm.score_fn(sde), sde, (8, 2), seeds=range(8)))
    assert type(instantiate(OmegaConf.load(ROOT / "conf" / "solver" / "em.yaml"))) is EulerMaruyama
    rsde = instantiate(OmegaConf.load(ROOT / "conf" / "solver" / "reverse_sde.yaml"), method="srk")
    assert type(rsde) is ReverseSDESolver and rsde.method == "srk"


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "solver").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_solver_config_builds_a_sampler(path):
    """One way to build a sampler: its class, directly or through the ``_target_`` of its config."""
    assert isinstance(instantiate(OmegaConf.load(path)), Sampler)


# --- the probability-flow ODE per example -----------------------------------------------------------
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_per_example_samples_do_not_depend_on_the_batch(sde_name):
    """The same x_T rows solved in batches of 1 and 5 give identical rows; nfe is the total."""
    sde, gm = SDES[sde_name], mixture(2)
    x_T = sde.prior_sample((5, 2), generator=torch.Generator().manual_seed(3))
    ode = ProbabilityFlowODE(rtol=1e-4, atol=1e-4, per_example=True)
    batch = ode.sample(gm.score_fn(sde), sde, (5, 2), x_T=x_T)
    batch_nfe = ode.nfe
    counts = []
    for i in range(5):
        counter = Counter(gm.score_fn(sde))
        alone = ode.sample(counter, sde, (1, 2), x_T=x_T[i:i + 1])
        assert torch.equal(alone[0], batch[i])
        assert ode.nfe == counter.calls
        counts.append(ode.nfe - 1)  # less the denoising step
    assert batch_nfe == sum(counts) + 1
    shared = ProbabilityFlowODE(rtol=1e-4, atol=1e-4).sample(gm.score_fn(sde), sde, (5, 2), x_T=x_T)
    torch.testing.assert_close(shared, batch, rtol=0, atol=5e-3)


def test_the_fresh_brownian_source_fits_the_installed_torchsde():
    """FreshBrownian subclasses torchsde's private BaseBrownian: the installed torchsde lies in the
    tested range and the class implements every abstract method of the base."""
    import torchsde
    from packaging.version import Version
    from torchsde._brownian.brownian_base import BaseBrownian

    from scoresde.solvers.brownian import TESTED_TORCHSDE, FreshBrownian

    lo, hi = TESTED_TORCHSDE
    assert Version(lo) <= Version(torchsde.__version__) < Version(hi), torchsde.__version__
    assert not getattr(FreshBrownian, "__abstractmethods__", set())
    assert set(BaseBrownian.__abstractmethods__) <= set(vars(FreshBrownian))


def test_finiteness_check_every_k_calls_names_the_step_it_ran_at():
    calls = []

    def nan_from_the_second_call(x, t):
        calls.append(1)
        return x * torch.nan if len(calls) >= 2 else x

    counter = CountingScore(nan_from_the_second_call, check_every=4)
    t = torch.full((3,), 0.25)
    for step in range(3):
        counter.step = step
        counter(torch.ones(3, 2), t)  # calls 1-3: not checked
    counter.step = 3
    with pytest.raises(SamplingError, match=r"NaN/inf at step 3, t = 0\.25"):
        counter(torch.ones(3, 2), t)
    assert counter.nfe == 4


@pytest.mark.parametrize("sde_name", list(SDES))
def test_pc_step_grid_matches_the_sde_coefficients(sde_name):
    """The predictor-corrector's per-step coefficients, computed for the whole grid at once, equal
    the SDE's own at each step."""
    sde = SDES[sde_name]
    grid = Step.grid(sde, 7, sde.sampling_eps)
    assert len(grid) == 7 and grid[0].t == sde.T
    assert grid[-1].t - grid[-1].dt == pytest.approx(sde.sampling_eps, abs=1e-15)
    for step in grid:
        r, q = sde.transition(step.t, step.dt)
        assert (step.r, step.q) == pytest.approx((float(r), float(q)), rel=1e-12)
        assert step.alpha == pytest.approx(float(sde.langevin_alpha(step.t, step.dt)), rel=1e-12)
        assert step.std == pytest.approx(float(sde.std(step.t)), rel=1e-12)
        assert step.std_next == pytest.approx(float(sde.std(step.t - step.dt)), rel=1e-12, abs=1e-15)
