"""Posterior samplers for linear measurements ``y = A x + sigma_y n`` with an unconditional score model, and
SDEdit. Every function takes the sampler whose settings (steps, eps, denoise) it uses, as
:func:`scoresde.conditional.impute` does, and reuses the SDE's formulas (``transition``, ``reverse_drift``,
``mean_coef``, ``std``) and Tweedie's ``x0_hat(x_t) = (x_t + s(t)^2 score) / m(t)``.

What each method assumes (and what it costs):

* :func:`mcgdiff` (``"smc"``): MCGdiff (Cardoso, Janati, Le Corff, Moulines, "Monte Carlo guided diffusion for
  Bayesian linear inverse problems", ICLR 2024), a particle filter in the SVD basis of ``A``. Measuring
  coordinate ``i`` of ``V^T x`` with noise ``sigma_y / S_i`` is the same as observing the diffused
  coordinate at the time ``tau_i`` where ``s(tau)^2 / m(tau)^2 - s(eps)^2 / m(eps)^2 = sigma_y^2 / (S_i
  m(eps))^2`` (the forward SDE is isotropic and ``V`` orthogonal):
  ``o_i = m(tau_i) / m(eps) (U^T y)_i / S_i``. With ``t_j`` the first grid time ``<= tau_i``,
  ``o_i = a_i x_{t_j, i} + b_i z`` (the exact forward
  transition from ``t_j`` to ``tau_i``; ``b_i = 0`` when ``sigma_y = 0``, a pinned coordinate). Before ``t_j``
  the coordinate is guided by the twist ``g_t(x) = N(x; c_t o_i, d_t^2)`` (the forward transition from
  ``tau_i`` to ``t``); the proposal is the reverse kernel ``N(mean(x_t), std^2)`` times the twist (or the
  likelihood at ``t_j``), the weight its normaliser over the previous twist, so the twists telescope and the
  weighted particles target the exact posterior ``p_eps(x | y)`` as ``particles -> inf`` (exact score, small
  steps; the prior ``N(0, prior_std^2)`` at ``T``); at a finite ``particles`` it is biased, mostly in the
  weights of the posterior's modes (on the 16-D oracle with 8 / 32 / 128 / 256 particles per row: 7.3 /
  2.7 / 1.2 / ~0.9x the noise floor). Rows with the same measurement pool their particles, as
  :func:`~scoresde.conditional.impute` does (``pool=False``: a population per row). Needs a stochastic
  kernel: ``em`` (Euler), ``pc`` with ``corrector=none`` or ``ddim`` with ``eta > 0``.
* :func:`dps`: diffusion posterior sampling (Chung, Kim, Mccann, Klasky, Ye, ICLR 2023, Algorithm 1): after
  each reverse step ``x <- x - zeta grad_{x_t} ||y - A x0_hat(x_t)||`` (the reference code's normalised
  step; ``zeta = step_size``). Approximate (``p(y | x_t)`` replaced by a point mass at ``x0_hat``): it
  ignores ``sigma_y`` and its bias depends on ``step_size`` and the grid. One score-gradient per step.
* :func:`pigdm`: pseudo-inverse guided diffusion (Song, Vahdat, Mardani, Kautz, ICLR 2023): the guidance
  ``g = grad_{x_t} log N(y; A x0_hat(x_t), r_t^2 A A^T + sigma_y^2 I) = J^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1
  (y - A x0_hat)`` with ``r_t^2 = s^2 / (m^2 + s^2)`` (the posterior variance of ``x_0`` under a unit
  Gaussian data prior), computed in the SVD by one vector-Jacobian product. Approximate (Gaussian
  ``p(x_0 | x_t)``). With DDIM it is the paper's Algorithm 1: each DDIM step plus
  ``weight * m(t') m(t) r_t^2 g`` (in the VE-normalised ``x / m`` the guidance ``r_t^2 grad log N``, at
  ``sigma_y = 0`` the pseudo-inverse guidance ``J~^T A^+ (y - A x0_hat)``); stable at ``weight`` 1 on the
  1,000-step digits model and 1.4x / 2.0x the noise floor on the oracle (2-D / 16-D). With any other
  sampler it is the guided score ``score + weight * g`` (few-step solvers too), far more biased (12x the
  floor) and stiff where ``J ~ 1 / m(t)`` is large: on the 1,000-step digits model ``weight`` 1 and 0.1
  diverge (NaN near ``t = 0.9``, Euler-Maruyama) and 0.01 runs (``benchmarks/README.md``).
* :func:`sdedit` (Meng et al., ICLR 2022): diffuse the damaged image to ``t0`` with the forward kernel
  ``N(m(t0) x, s(t0)^2)`` and solve the reverse SDE (or ODE) from there; no measurement model at all: ``t0``
  trades faithfulness (small) for realism (``t0 = 1``: a prior sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..conditional import final_draw, populations, resample, reverse_kernels
from ..score import ScoreFn
from ..sde import SDE, expand_to
from ..solvers import DDIM, ProbabilityFlowODE
from ..solvers.base import NoiseSource, Sampler, tweedie_denoise
from ..solvers.log_snr import log_snr, time_steps
from .operators import LinearOperator

__all__ = [
    "RESTORATION_METHODS", "check_solver", "mcgdiff", "dps", "pigdm", "pigdm_score", "sdedit",
    "check_measurement",
]

#: the posterior samplers: name -> what it needs of the solver
RESTORATION_METHODS = ("smc", "dps", "pigdm")

_LOG_2PI = math.log(2 * math.pi)


def check_measurement(operator: LinearOperator, y: torch.Tensor, sigma_y: float) -> float:
    """Checks a measurement batch ``y`` ``(B, *out_shape)`` and ``sigma_y >= 0``; returns ``sigma_y``."""
    if not isinstance(operator, LinearOperator):
        raise ValueError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    if y.dim() < 2:
        raise ValueError(f"y must be a batch (B, *out_shape), got shape {tuple(y.shape)}")
    operator.check_measurement(y)
    if not float(sigma_y) >= 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    return float(sigma_y)


def _times(sampler: Sampler, sde: SDE, steps: int | None, start: float | None = None) -> list[float]:
    """The sampler's grid from ``start`` (default ``T``) to its ``eps``: DDIM's own grid, else uniform."""
    steps = getattr(sampler, "steps", 100) if steps is None else steps
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    eps = sde.sampling_eps if sampler.eps is None else sampler.eps
    start = sde.T if start is None else start
    if isinstance(sampler, DDIM):
        return time_steps(sde, sampler.time_grid, int(steps), start, eps)
    return torch.linspace(start, eps, int(steps) + 1, dtype=torch.float64).tolist()


def _ddim_kernel(eta: float):
    """DDIM's step as a Gaussian kernel (:class:`~scoresde.solvers.DDIM`): mean
    ``m(t') x0_hat + sqrt(s(t')^2 - sigma^2) eps_hat``, std ``sigma = eta s(t') sqrt(1 - exp(-2 h))``; at
    ``eta = 1`` the ancestral (DDPM) step, the posterior ``q(x_t' | x_t, x0_hat)`` of the forward process."""

    def kernel(score, sde: SDE, x, t: float, t_next: float):
        m, s = float(sde.mean_coef(t)), float(sde.std(t))
        m_next, s_next = float(sde.mean_coef(t_next)), float(sde.std(t_next))
        sigma = eta * s_next * math.sqrt(-math.expm1(-2.0 * (log_snr(sde, t_next) - log_snr(sde, t))))
        e = -s * _at(score, x, t)
        x0 = (x - s * e) / m
        return m_next * x0 + math.sqrt(max(s_next**2 - sigma**2, 0.0)) * e, sigma

    return kernel


def _predictor(sampler: Sampler, method: str):
    """The stochastic reverse kernel ``(mean, std)`` of ``sampler`` for a method that needs one: ``em``,
    ``pc`` (no corrector) or ``ddim`` with ``eta > 0``."""
    if isinstance(sampler, DDIM):
        if not sampler.eta > 0:
            raise ValueError(f"method={method} needs a stochastic kernel: DDIM with eta > 0 (1: ancestral), "
                             f"got eta={sampler.eta}")
        return _ddim_kernel(float(sampler.eta))
    kind, kernel = reverse_kernels(sampler)
    if kind == "ode":
        raise ValueError(f"method={method} needs a stochastic sampler (em, or pc with corrector=none), not "
                         "the ODE")
    correctors, predictor = kernel
    if correctors:
        raise ValueError(f"method={method} runs its own guided steps and takes no Langevin corrector: use "
                         "the pc sampler with corrector=none, or em")
    return predictor


def check_solver(method: str, sampler: Sampler) -> None:
    """Raises ``ValueError`` when ``method`` (``smc``, ``dps``, ``pigdm``, ``sdedit``, ``pinv``) cannot use
    ``sampler``: ``smc`` and ``dps`` need a stochastic kernel (em, pc without corrector, ddim with eta > 0),
    ``sdedit`` the em, pc or ode step loop; ``pigdm`` (a guided score) runs on every sampler."""
    if method in ("smc", "dps"):
        _predictor(sampler, method)
    elif method == "sdedit":
        reverse_kernels(sampler)


def _at(score: ScoreFn, x: torch.Tensor, t: float) -> torch.Tensor:
    return score(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))


def _finish(sampler: Sampler, score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t_end: float,
            operator: LinearOperator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Tweedie's denoising at ``eps`` when the sampler asks for it; a noiseless measurement (``y`` given)
    is then restored exactly: ``x + A^+ (y - A x)``."""
    if not sampler.denoise:
        return x
    with torch.no_grad():
        t = torch.full((x.shape[0],), t_end, dtype=x.dtype, device=x.device)
        x = tweedie_denoise(score_fn, sde, x, t)
    return x if y is None else x + operator.pinv(y - operator(x))


# --- MCGdiff ----------------------------------------------------------------------------------------------
def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) ** 2 / var + var.log() + _LOG_2PI)


def _matching_time(sde: SDE, target: torch.Tensor, eps: float) -> torch.Tensor:
    """``tau`` with ``s(tau)^2 / m(tau)^2 = target`` (>= its value at ``eps``), by bisection; ``tau`` may
    exceed ``T`` (the SDE's formulas extend)."""

    def ratio(t):
        return (sde.std(t) / sde.mean_coef(t)) ** 2

    lo = torch.full_like(target, eps)
    hi = torch.full_like(target, sde.T)
    for _ in range(12):  # grow the bracket (each coefficient is finite or +inf for large t)
        short = ~(ratio(hi) >= target)
        if not short.any():
            break
        lo, hi = torch.where(short, hi, lo), torch.where(short, 2 * hi, hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = ratio(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return hi


class _Observation:
    """MCGdiff's view of the measurement: per spectral coordinate ``i < r`` the observed value ``o_i`` (per
    row), its grid index ``j_i``, ``o_i = a_i x_{t_j, i} + b_i z``, and the twists before ``t_j``."""

    def __init__(self, sde: SDE, operator: LinearOperator, y: torch.Tensor, sigma_y: float,
                 times: list[float]):
        s = operator.singular_values.to(device=y.device)
        eps = times[-1]
        grid = torch.tensor(times, dtype=torch.float64, device=y.device)
        m_eps = float(sde.mean_coef(eps))
        if sigma_y == 0:
            tau = torch.full_like(s, eps)
        else:
            base = float(sde.std(eps) / sde.mean_coef(eps)) ** 2
            tau = _matching_time(sde, base + (sigma_y / (s * m_eps)) ** 2, eps)
        self.index = (grid[None, :] <= tau[:, None] + 1e-12).to(torch.int8).argmax(1)  # first t_j <= tau
        self.a, self.b = sde.transition(tau, tau - grid[self.index])
        if sigma_y == 0:
            self.a, self.b = torch.ones_like(s), torch.zeros_like(s)
        ybar = operator.ut(y.double())[:, : s.numel()] / s
        self.o = ybar * (sde.mean_coef(tau) / m_eps)  # (B, r): the observed x_tau
        self.tau, self.grid, self.sde, self.rank = tau, grid, sde, s.numel()

    def twist(self, k: int):
        """``(pre, c, d^2)``: which coordinates are still before their observation at grid index ``k`` and
        their twist ``N(x; c o, d^2)`` (the forward transition from ``tau`` to ``t_k``)."""
        pre = self.index > k
        t = self.grid[k].expand_as(self.tau)
        c, d = self.sde.transition(t, (t - self.tau).clamp_min(0.0))
        return pre, c, torch.where(pre, d**2, 1.0)

    def log_z_and_proposal(self, mu: torch.Tensor, var: float, k: int, o: torch.Tensor):
        """For the reverse kernel ``N(mu, var)`` over the first ``r`` spectral coordinates ``(P, r)`` into
        grid index ``k``: the log normaliser of kernel x potential ``(P,)``, and the proposal's mean and
        variance
        ``(P, r)`` (variance 0: pinned)."""
        pre, c, d2 = self.twist(k)
        obs = self.index == k
        pinned = obs & (self.b <= 1e-12)
        noisy = obs & ~pinned
        a, b2 = self.a, torch.where(noisy, self.b**2, 1.0)
        var_t = torch.full_like(d2, var)
        # twist N(x; c o, d^2), likelihood N(o; a x, b^2), or pinned x = o / a; free otherwise
        log_z = torch.where(pre, _log_normal(c * o, mu, var_t + d2), 0.0)
        log_z = torch.where(noisy, _log_normal(o, a * mu, a**2 * var_t + b2), log_z)
        log_z = torch.where(pinned, _log_normal(o / a, mu, var_t), log_z)
        prec = 1.0 / var_t + torch.where(pre, 1.0 / d2, 0.0) + torch.where(noisy, a**2 / b2, 0.0)
        shift = torch.where(pre, c * o / d2, 0.0) + torch.where(noisy, a * o / b2, 0.0)
        mean = torch.where(pinned, o / a, (mu / var_t + shift) / prec)
        return log_z.sum(1), mean, torch.where(pinned, 0.0, 1.0 / prec)

    def log_twist(self, c_obs: torch.Tensor, k: int, o: torch.Tensor) -> torch.Tensor:
        pre, c, d2 = self.twist(k)
        return torch.where(pre, _log_normal(c_obs, c * o, d2), 0.0).sum(1)


def mcgdiff(sampler: Sampler, score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor,
            sigma_y: float = 0.0, *, particles: int = 16, pool: bool = True,
            generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
            steps: int | None = None,
            progress: bool = False) -> torch.Tensor:
    """Sample ``p(x | y)`` for each row of ``y`` ``(B, *out_shape)`` with MCGdiff (module docstring):
    ``particles`` per row; with ``pool`` rows with equal measurements pool theirs (``B`` equal rows with
    ``particles=1`` are one population of ``B``, correlated by resampling), else each row is an independent
    population of ``particles``. Returns ``(B, *in_shape)``; at ``sigma_y = 0``, ``A x = y`` to rounding."""
    sigma_y = check_measurement(operator, y, sigma_y)
    predictor = _predictor(sampler, "smc")
    if int(particles) < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    times = _times(sampler, sde, steps)
    batch, k, d, r = y.shape[0], int(particles), operator.in_dim, operator.rank
    obs = _Observation(sde, operator, y, sigma_y, times)
    dtype = y.dtype if y.dtype.is_floating_point else torch.float32
    noise = NoiseSource((k, d), batch, generator=generator, seeds=seeds, device=y.device, dtype=dtype)

    def draw():
        return noise().reshape(batch * k, d)

    o = obs.o.repeat_interleave(k, dim=0)  # (P, r), float64
    key = y.reshape(batch, -1) if pool else torch.arange(batch, device=y.device)[:, None].to(dtype)
    key = key.repeat_interleave(k, dim=0)
    members, valid, _ = populations(key, torch.ones_like(key, dtype=torch.bool))

    def propose(mu_bar: torch.Tensor, var: float, index: int):
        _, mean, v = obs.log_z_and_proposal(mu_bar[:, :r].double(), var, index, o)
        z = draw()
        known = (mean + v.sqrt() * z[:, :r].double()).to(dtype)
        c = torch.cat([known, mu_bar[:, r:] + math.sqrt(var) * z[:, r:]],
                      dim=1)
        return operator.v(c), obs.log_twist(c[:, :r].double(), index, o)

    bar = tqdm(total=len(times) - 1, desc="restore smc", disable=not progress, leave=False)
    with torch.no_grad():
        zero = torch.zeros(batch * k, d, dtype=dtype, device=y.device)
        x, log_g = propose(zero, sde.prior_std**2, 0)
        log_w = torch.zeros(batch * k, dtype=torch.float64, device=y.device)
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
            mean, std = predictor(score_fn, sde, x, t, t_next)
            var = float(std) ** 2
            mu_bar = operator.vt(mean)
            log_z, _, _ = obs.log_z_and_proposal(mu_bar[:, :r].double(), var, i + 1, o)
            log_w = log_w + log_z - log_g
            log_w, ancestors = resample(log_w, members, valid, draw, threshold=0.5)
            x, log_g = propose(mu_bar[ancestors], var, i + 1)
            bar.update(1)
        bar.close()
        x = x[final_draw(log_w, members, valid, draw)].reshape(batch, k, *operator.in_shape)[:, 0]
    return _finish(sampler, score_fn, sde, x, times[-1], operator, y if sigma_y == 0 else None)


def _start(sampler: Sampler, sde: SDE, operator: LinearOperator, y: torch.Tensor, generator, seeds,
           steps: int | None, desc: str, progress: bool):
    """A guided reverse loop's start: the grid, the rows' noise source, the prior draw ``x_T`` and the grid's
    step pairs (with one progress bar)."""
    times = _times(sampler, sde, steps)
    noise = NoiseSource(operator.in_shape, y.shape[0], generator=generator, seeds=seeds, device=y.device,
                        dtype=y.dtype)
    pairs = tqdm(list(zip(times[:-1], times[1:])), desc=desc, disable=not progress, leave=False)
    return times, noise, sde.prior_std * noise(), pairs


# --- DPS ---------------------------------------------------------------------------------------------------
def dps(sampler: Sampler, score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor, *,
        step_size: float = 1.0, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
        steps: int | None = None, progress: bool = False) -> torch.Tensor:
    """Diffusion posterior sampling (module docstring): each reverse step of ``sampler`` (``em``, or ``pc``
    with ``corrector=none``) followed by ``x <- x - step_size * grad_{x_t} ||y - A x0_hat(x_t)||``."""
    check_measurement(operator, y, 0.0)
    if not float(step_size) >= 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    predictor = _predictor(sampler, "dps")
    times, noise, x, pairs = _start(sampler, sde, operator, y, generator, seeds, steps, "restore dps",
                                    progress)
    for t, t_next in pairs:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            score = _at(score_fn, xg, t)
            x0 = (xg + float(sde.std(t)) ** 2 * score) / float(sde.mean_coef(t))
            residual = (y - operator(x0)).reshape(y.shape[0], -1)
            (grad,) = torch.autograd.grad(residual.norm(dim=1).sum(), xg)
        mean, std = predictor(_fixed(score.detach()), sde, x, t, t_next)
        x = (mean + std * noise() - float(step_size) * grad).detach()
    return _finish(sampler, score_fn, sde, x, times[-1])


def _fixed(score: torch.Tensor) -> ScoreFn:
    """A score function that returns the already evaluated ``score`` (the kernel reuses DPS's evaluation)."""
    return lambda x, t: score


# --- PiGDM -------------------------------------------------------------------------------------------------
def _pigdm_guidance(score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor, sigma_y: float,
                    x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(score, g, r_t^2)`` at ``x_t``: ``g = J^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0_hat)``,
    ``J = d x0_hat / d x_t``, ``r_t^2 = s^2 / (m^2 + s^2)`` (per row, shaped like ``x``); one
    vector-Jacobian product through the network."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"PiGDM's score got a batch of {x.shape[0]} for {y.shape[0]} measurements")
    r = operator.rank
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        score = score_fn(xg, t)
        m, s = expand_to(sde.mean_coef(t), x), expand_to(sde.std(t), x)
        x0 = (xg + s**2 * score) / m
        r2 = (sde.std(t) ** 2 / (sde.mean_coef(t) ** 2 + sde.std(t) ** 2)).to(x.dtype)[:, None]
        sv = operator.singular_values.to(x)
        resid = operator.ut(y.to(x))[:, :r] - sv * operator.vt(x0)[:, :r]
        h = operator.v(operator._pad(sv * resid / (r2 * sv**2 + sigma_y**2), operator.in_dim))
        (grad,) = torch.autograd.grad((x0 * h.detach()).sum(), xg)
    return score.detach(), grad, expand_to(r2[:, 0], x)


def pigdm_score(score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor, sigma_y: float,
                weight: float = 1.0) -> ScoreFn:
    """The PiGDM-guided score (module docstring): ``s(x, t) + weight * J^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1
    (y - A x0_hat)``, ``J = d x0_hat / d x_t``, for rows aligned with ``y``."""
    sigma_y = check_measurement(operator, y, sigma_y)
    if not float(weight) >= 0:
        raise ValueError(f"the guidance weight must be >= 0, got {weight}")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        score, grad, _ = _pigdm_guidance(score_fn, sde, operator, y, sigma_y, x, t)
        return score + float(weight) * grad

    return guided


def _pigdm_ddim(sampler: DDIM, score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor,
                sigma_y: float, weight: float, generator, seeds, progress: bool) -> torch.Tensor:
    """PiGDM's Algorithm 1 (Song et al. 2023): DDIM's step on the unguided score plus the guidance,
    written in the VE-normalised form ``x~ = x / m`` (variance ``sigma_t^2 = s^2 / m^2``) in which the
    paper states it:

        x~_{t'} = DDIM(x~_t) + weight * r_t^2 grad_{x~_t} log N(y; A x0_hat, r_t^2 A A^T + sigma_y^2 I),
        r_t^2 = sigma_t^2 / (1 + sigma_t^2),

    i.e. at ``sigma_y = 0`` the pseudo-inverse guidance ``((A^+ y - A^+ A x0_hat)^T d x0_hat / d x~_t)^T``
    (the paper's ``sqrt(alpha_t) g``: ``d / d x~ = m d / d x``). In our ``x = m x~``:
    ``x_{t'} = m(t') x0_hat + sqrt(s(t')^2 - sigma^2) z_hat + sigma z + weight m(t') m(t) r_t^2 g`` with
    ``g`` of :func:`_pigdm_guidance`. The factor ``m(t) r_t^2`` keeps the guidance bounded where
    ``J ~ 1 / m(t)`` is large (``t -> T``) and where ``r_t -> 0`` (``t -> eps``). (Read in VP coordinates
    with ``g`` itself, ``+ weight m(t) g``, the step diverges on the 1,000-step digits model at ``weight``
    1: NaN near ``t = 0.88``, ``x`` growing ~100x per step from ``t = 0.97``.)"""
    times, noise, x, pairs = _start(sampler, sde, operator, y, generator, seeds, None, "restore pigdm",
                                    progress)
    for t, t_next in pairs:
        score, grad, r2 = _pigdm_guidance(score_fn, sde, operator, y, sigma_y, x,
                                          torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
        mean, std = _ddim_kernel(sampler.eta)(_fixed(score), sde, x, t, t_next)
        guidance = float(weight) * float(sde.mean_coef(t_next)) * float(sde.mean_coef(t)) * r2 * grad
        x = (mean + std * noise() + guidance) if std > 0 else (mean + guidance)
    return _finish(sampler, score_fn, sde, x, times[-1])


def pigdm(sampler: Sampler, score_fn: ScoreFn, sde: SDE, operator: LinearOperator, y: torch.Tensor,
          sigma_y: float = 0.0, *, weight: float = 1.0, generator: torch.Generator | None = None,
          seeds: Sequence[int] | None = None, progress: bool = False) -> torch.Tensor:
    """PiGDM: with :class:`~scoresde.solvers.DDIM` the paper's Algorithm 1 (:func:`_pigdm_ddim`, the
    guidance added to each DDIM step, stable on a trained network at ``weight = 1``); with any other
    sampler that sampler on the PiGDM-guided score (:func:`pigdm_score`); the ODE with ``per_example``
    runs row by row."""
    shape = (y.shape[0], *operator.in_shape)
    if isinstance(sampler, ProbabilityFlowODE) and sampler.per_example and y.shape[0] > 1:
        rows = [pigdm(sampler, score_fn, sde, operator, y[i:i + 1], sigma_y, weight=weight,
                      generator=generator, seeds=None if seeds is None else [seeds[i]], progress=progress)
                for i in range(y.shape[0])]
        return torch.cat(rows)
    guided = pigdm_score(score_fn, sde, operator, y, sigma_y, weight)  # checks y, sigma_y and weight
    if isinstance(sampler, DDIM):
        return _pigdm_ddim(sampler, score_fn, sde, operator, y, float(sigma_y), float(weight), generator,
                           seeds, progress)
    return sampler.sample(guided, sde, shape, generator=generator, seeds=seeds, progress=progress,
                          device=y.device, dtype=y.dtype)


# --- SDEdit ------------------------------------------------------------------------------------------------
def sdedit(sampler: Sampler, score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t0: float, *,
           generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
           steps: int | None = None, progress: bool = False) -> torch.Tensor:
    """SDEdit (module docstring): ``x_t0 = m(t0) x + s(t0) z``, then ``sampler``'s reverse steps (``em``,
    ``pc`` or the ``ode``, on its share ``~ steps * t0`` of the grid) from ``t0 * T`` to ``eps``."""
    if not 0.0 < float(t0) <= 1.0:
        raise ValueError(f"t0 must lie in (0, 1], got {t0}")
    kind, kernel = reverse_kernels(sampler)
    eps = sde.sampling_eps if sampler.eps is None else sampler.eps
    start = float(t0) * sde.T
    if start <= eps:
        raise ValueError(f"t0={t0} is not after the sampler's last time eps={eps}")
    steps = getattr(sampler, "steps", 100) if steps is None else int(steps)
    times = _times(sampler, sde, max(1, math.ceil(steps * (start - eps) / (sde.T - eps))), start=start)
    noise = NoiseSource(x.shape[1:], x.shape[0], generator=generator, seeds=seeds, device=x.device,
                        dtype=x.dtype)
    with torch.no_grad():
        x = float(sde.mean_coef(start)) * x + float(sde.std(start)) * noise()
        for t, t_next in tqdm(list(zip(times[:-1], times[1:])), desc=f"sdedit {kind}", disable=not progress,
                              leave=False):
            if kind == "ode":
                x = kernel(score_fn, sde, x, t, t_next)
                continue
            correctors, predictor = kernel
            for correct in correctors:
                mean, std = correct(score_fn, sde, x, t, t_next)
                x = mean + std * noise()
            mean, std = predictor(score_fn, sde, x, t, t_next)
            x = mean + std * noise()
    return _finish(sampler, score_fn, sde, x, times[-1])
