"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Appendix D.2).

Along the probability flow ``dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` the log-density
obeys the instantaneous change of variables ``d log p_t(x(t)) / dt = -div v(x(t), t)``, so

    log p_eps(x) = log p_T(z) + int_eps^T div v(x(t), t) dt,   z = x(T),

where ``p_T`` is replaced by the SDE's prior. We integrate the augmented state ``[x, int div v]``
from ``eps`` to ``T`` with ``scipy.integrate.solve_ivp`` through the same
:func:`~scoresde.solvers.ode.integrate` and :meth:`SDE.reverse_drift` as the ODE sampler. The
divergence is either exact (``D`` vector-Jacobian products; low-dimensional
data) or the Hutchinson-Skilling estimate ``e^T (dv/dx) e`` with one probe ``e`` per example,
Rademacher or Gaussian, fixed along the trajectory (one VJP per evaluation; unbiased).

Bits per dimension of discrete data: see :mod:`scoresde.quantization` for the formula.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .bound import BoundResult, bound_bits_per_dim, variational_bound  # noqa: F401  (the bound, beside the ODE)
from .quantization import bits_per_dim_from_logp, check_integer_data, dequantize
from .score import ScoreFn
from .sde import SDE
from .solvers.base import CountingScore, NoiseSource, SamplingError
from .solvers.ode import check_method, integrate

__all__ = ["ESTIMATORS", "LikelihoodResult", "BitsPerDimResult", "log_likelihood", "bits_per_dim"]

ESTIMATORS = ("rademacher", "gaussian", "exact")


@dataclass
class LikelihoodResult:
    """``logp`` (B,): log p_eps(x) in nats (prior at T); ``z``: the latent x(T); ``nfe``: score
    evaluations; ``prior_logp`` (B,) and ``delta_logp`` (B,) = the divergence integral;
    ``failed``: indices of examples whose ODE diverged (their ``logp`` is NaN)."""

    logp: torch.Tensor
    z: torch.Tensor
    nfe: int
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    failed: list[int]


@dataclass
class BitsPerDimResult(LikelihoodResult):
    """:class:`LikelihoodResult` plus ``bpd`` (B,), the bits/dim of the discrete data."""

    bpd: torch.Tensor = None


def _score_divergence(s: torch.Tensor, x: torch.Tensor, estimator: str,
                      probe: torch.Tensor | None) -> torch.Tensor:
    """``div_x s`` per example: exact (one VJP per dimension) or ``e^T (ds/dx) e``."""
    b = x.shape[0]
    if estimator == "exact":
        sf = s.reshape(b, -1)
        div = torch.zeros(b, dtype=s.dtype, device=s.device)
        for j in range(sf.shape[1]):
            (grad,) = torch.autograd.grad(sf[:, j].sum(), x, retain_graph=j < sf.shape[1] - 1)
            div = div + grad.reshape(b, -1)[:, j]
        return div
    (vjp,) = torch.autograd.grad(s, x, probe)
    return torch.linalg.vecdot(vjp.reshape(b, -1), probe.reshape(b, -1))


def _solve(counter: CountingScore, sde: SDE, x: torch.Tensor, probe, estimator: str, eps: float,
           method, rtol: float, atol: float, blas_threads, progress: bool):
    """One augmented solve of the batch ``x``: returns ``(z, delta_logp)``.

    The probability-flow drift and its divergence (``D`` = dimensions of one example),

        v(x, t)     = f(x, t) - g(t)^2 s(x, t) / 2,        f(x, t) = a(t) x,
        div v(x, t) = D a(t)  - g(t)^2 div s(x, t) / 2,

    so ``int_eps^T div v dt = D (log m(T) - log m(eps)) + int_eps^T -g(t)^2 div s / 2 dt``: the
    vector-Jacobian products run through the score alone, the ODE carries ``[x, -g^2 div s / 2]``
    and the drift's part is added in closed form (:meth:`SDE.log_mean_coef`)."""
    b, shape, dtype = x.shape[0], x.shape, x.dtype
    d = x[0].numel()

    def rhs(t: float, y: torch.Tensor) -> torch.Tensor:
        counter.step = counter.nfe
        x_t = y[:, :d].reshape(shape)
        xs = x_t.to(dtype).requires_grad_(True)  # the score in the model's dtype, the state in float64
        with torch.enable_grad():
            s = counter(xs, t)  # t for the batch, in the score's dtype
            div_s = _score_divergence(s, xs, estimator, probe)
        v = sde.reverse_drift(x_t, t, s.detach(), probability_flow=True)  # f - g^2 s / 2
        div_v_part = -0.5 * sde.diffusion(t) ** 2 * div_s.detach()      # -g^2 div s / 2
        return torch.cat([v.reshape(b, d), div_v_part.to(y.dtype)[:, None]], 1)

    y0 = torch.cat([x.detach().reshape(b, d), torch.zeros(b, 1, dtype=dtype, device=x.device)], 1)
    y1, _ = integrate(rhs, y0.double(), eps, sde.T, method=method, rtol=rtol, atol=atol,
                      blas_threads=blas_threads, progress=progress, desc="likelihood ode")
    drift_part = d * (sde.log_mean_coef(sde.T) - sde.log_mean_coef(eps))
    return y1[:, :d].to(dtype).reshape(shape), y1[:, d] + drift_part


def log_likelihood(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, *, estimator: str = "rademacher",
                   method="RK45", rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
                   generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
                   per_example: bool = False, blas_threads: int | None = 1,
                   progress: bool = False) -> LikelihoodResult:
    """``log p_eps(x)`` in nats per example through the probability-flow ODE.

    Args:
        estimator: ``rademacher`` or ``gaussian`` (Hutchinson-Skilling, one probe per example drawn
            once and fixed along the trajectory) or ``exact`` (full divergence; ``D`` VJPs each step).
        method, rtol, atol: ``solve_ivp`` settings (the paper's RK45, 1e-5, 1e-5).
        eps: the start time (the paper's 1e-5); the result is the density of ``p_eps``.
        generator / seeds: the probes' randomness; with ``seeds`` (one per example) each probe comes
            from its own generator.
        per_example: solve each example on its own, so its value (adaptive steps included) does not
            depend on the batch it sits in. Default: one batched solve (faster; the step sizes are
            shared by the batch, so values move within the tolerance with the batch).

    Examples whose ODE diverges are not allowed to take the batch down: after a failed batched
    solve each example is solved alone, and those that still fail get ``logp = NaN`` and are listed
    in ``result.failed`` (with a warning).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    check_method(method)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, ...) with a batch dimension, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor in the model's data range; "
                         "for integer data use bits_per_dim")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    b = x.shape[0]
    probe = None
    if estimator != "exact":
        draw = NoiseSource(x.shape[1:], b, generator=generator, seeds=seeds, device=x.device, dtype=x.dtype)
        probe = draw()
        if estimator == "rademacher":
            probe = torch.where(probe >= 0, 1.0, -1.0).to(x.dtype)
    # integrate() checks every right-hand side, which carries the score, for NaN/inf
    counter = CountingScore(score_fn, check_finite=False)
    settings = (estimator, eps, method, rtol, atol, blas_threads)

    z = torch.full_like(x, float("nan"))
    delta = torch.full((b,), float("nan"), dtype=torch.float64, device=x.device)
    failed: list[int] = []
    if not per_example:
        try:
            z, delta = _solve(counter, sde, x, probe, *settings, progress)
        except SamplingError as err:
            if b == 1:
                failed = [0]
            else:
                warnings.warn(f"batched likelihood solve failed ({err}); solving examples one by one",
                              RuntimeWarning, stacklevel=2)
                per_example = True
    if per_example:
        for i in range(b):
            p_i = None if probe is None else probe[i:i + 1]
            try:
                z_i, d_i = _solve(counter, sde, x[i:i + 1], p_i, *settings, False)
                z[i], delta[i] = z_i[0], d_i[0]
            except SamplingError:
                failed.append(i)
    prior = sde.prior_logp(z.double())
    logp = prior + delta
    bad = (~torch.isfinite(logp)).nonzero().flatten().tolist()
    failed = sorted(set(failed) | set(bad))
    if failed:
        logp[failed] = float("nan")
        more = "..." if len(failed) > 10 else ""
        warnings.warn(f"the likelihood ODE diverged for {len(failed)} of {b} examples "
                      f"(indices {failed[:10]}{more}); their logp is NaN", RuntimeWarning, stacklevel=2)
    return LikelihoodResult(logp=logp, z=z, nfe=counter.nfe, prior_logp=prior, delta_logp=delta,
                            failed=failed)


def bits_per_dim(score_fn: ScoreFn, sde: SDE, x_int: torch.Tensor, *, levels: int = 256,
                 data_range: tuple[float, float] = (-1.0, 1.0), dequantization: str = "uniform",
                 generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
                 dtype: torch.dtype = torch.float32, **likelihood_kwargs) -> BitsPerDimResult:
    """Bits per dimension of integer data ``x_int`` in ``[0, levels)``.

    The data are dequantized and scaled, ``x = lo + (hi - lo) (k + u) / levels`` with
    ``u ~ U[0, 1)`` (``dequantization="uniform"``), their log-density ``log p(x)`` computed by
    :func:`log_likelihood`, and

        bits/dim = -log p(x) / (D ln 2) + log2(levels) - log2(hi - lo),

    an upper bound (Jensen) on the discrete data's negative log2-likelihood per dimension.
    With ``levels=256, data_range=(-1, 1)`` the offset is the paper's ``+7``.
    ``seeds`` (one per example) seed both the dequantization noise and the probe of each example.
    """
    if x_int.dim() < 2:
        raise ValueError(f"x_int must have shape (B, ...) with a batch dimension, got {tuple(x_int.shape)}")
    check_integer_data(x_int, levels)
    u = None
    if seeds is not None and dequantization == "uniform":  # per-example dequantization noise
        seeds = [int(s) for s in seeds]
        u = NoiseSource(x_int.shape[1:], x_int.shape[0], seeds=[s + 7919 for s in seeds], device=x_int.device,
                        dtype=dtype, distribution="uniform")()
    x = dequantize(x_int, levels, data_range, dequantization, generator=generator, dtype=dtype, u=u)
    res = log_likelihood(score_fn, sde, x, generator=generator, seeds=seeds, **likelihood_kwargs)
    bpd = bits_per_dim_from_logp(res.logp, x[0].numel(), levels, data_range)
    return BitsPerDimResult(**vars(res), bpd=bpd)
