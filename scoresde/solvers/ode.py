"""The probability-flow ODE (Song et al. eq. 13) solved by ``scipy.integrate.solve_ivp``.

    dx/dt = f(x, t) - g(t)^2 grad log p_t(x) / 2

shares its marginals p_t with the SDE, so integrating from ``x_T ~ p_T`` down to ``eps`` samples
the data (decode), and from data up to ``T`` gives its latent (encode). :func:`integrate` is the one
bridge between torch right-hand sides and scipy, used here and by the likelihood (which augments
the state with the divergence integral).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..score import ScoreFn
from ..sde import SDE
from .base import CountingScore, Sampler, SamplingError, batch_time, one_of

__all__ = ["ProbabilityFlowODE", "integrate", "probability_flow_drift", "ODE_METHODS"]

#: the methods of ``scipy.integrate.solve_ivp``
ODE_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")


def check_method(method) -> None:
    """Accept any ``solve_ivp`` method name (or an ``OdeSolver`` subclass)."""
    if isinstance(method, str):
        one_of("solve_ivp method", method, ODE_METHODS)


def probability_flow_drift(score: ScoreFn, sde: SDE, x: torch.Tensor, t: float,
                           dtype: torch.dtype | None = None) -> torch.Tensor:
    """The probability-flow drift (eq. 13) ``f(x, t) - g(t)^2 score(x, t) / 2`` at one time ``t`` for
    the batch, in ``x``'s dtype; the score is evaluated in ``dtype`` (default: ``x``'s; the solvers
    keep scipy's float64 state and call the model in its own dtype)."""
    xs = x if dtype is None else x.to(dtype)
    s = score(xs, batch_time(xs, t))
    return sde.reverse_drift(x, t, s, probability_flow=True)


def integrate(rhs: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, t1: float, *,
              method="RK45", rtol: float = 1e-5, atol: float = 1e-5, blas_threads: int | None = 1,
              progress: bool = False, desc: str = "ode") -> tuple[torch.Tensor, int]:
    """Solve ``dy/dt = rhs(t, y)`` from ``t0`` to ``t1`` with ``solve_ivp``; returns ``(y(t1), nfev)``
    in ``y0``'s dtype.

    scipy works on the flattened state in float64; ``rhs`` sees it in ``y0``'s dtype, shape and
    device and returns the derivative. ``blas_threads`` caps the BLAS pool that scipy's step-size
    control runs in (threadpoolctl): torch's and BLAS's thread pools fighting over the same cores
    made a 49k-dimensional solve 4-6x slower; ``None`` leaves it alone. A NaN/inf in ``rhs`` or a
    failed solve raises :class:`SamplingError` naming ``t``.
    """
    check_method(method)
    shape, dtype, device = y0.shape, y0.dtype, y0.device
    bar = tqdm(desc=desc, disable=not progress, leave=False, unit="nfe")

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        out = rhs(float(t), torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape))
        out = out.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
        if not np.isfinite(out).all():
            raise SamplingError(f"the ODE right-hand side is NaN/inf at t = {t:.6g}; try a looser tolerance, "
                                "a larger eps, or check the model")
        bar.update(1)
        return out

    y_init = y0.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    limits = threadpool_limits(limits=blas_threads, user_api="blas") if blas_threads else None
    try:
        sol = solve_ivp(fun, (t0, t1), y_init, method=method, rtol=rtol, atol=atol)
    finally:
        bar.close()
        if limits is not None:
            limits.restore_original_limits()
    if not sol.success:
        raise SamplingError(f"solve_ivp ({method}) failed between t = {t0:.6g} and {t1:.6g} "
                            f"at t = {sol.t[-1]:.6g}: {sol.message}")
    y1 = torch.from_numpy(sol.y[:, -1].copy()).to(device=device, dtype=dtype).reshape(shape)
    return y1, int(sol.nfev)


class ProbabilityFlowODE(Sampler):
    """Probability-flow ODE sampler and encoder.

    Args:
        method: any ``scipy.integrate.solve_ivp`` method (``RK45``, ``RK23``, ``DOP853``, ``Radau``,
            ``BDF``, ``LSODA``).
        rtol, atol: tolerances of the adaptive solver (the paper's 1e-5).
        per_example: solve each example as its own ODE with its own adaptive steps (as
            :func:`scoresde.likelihood.log_likelihood` can), so a sample does not depend on the batch
            it is drawn in nor on the number of processes; ``nfe`` is then the total over the
            examples. Default: the whole batch is one ODE system whose steps the batch shares (one
            network call per step for all examples: faster), so a sample equals its single-sample
            solve within the tolerances, not bit for bit.
        blas_threads: see :func:`integrate`.
        eps, denoise, check_finite: see :class:`~scoresde.solvers.base.Sampler`.
    """

    def __init__(self, method="RK45", rtol: float = 1e-5, atol: float = 1e-5, eps: float | None = None,
                 denoise: bool = True, per_example: bool = False, blas_threads: int | None = 1,
                 check_finite: bool = True):
        super().__init__(eps=eps, denoise=denoise, check_finite=check_finite)
        check_method(method)
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.per_example, self.blas_threads = bool(per_example), blas_threads

    def _solve(self, score, sde, x, eps, noise):
        """Decode: integrate from ``x_T ~ p_T`` (or the given latent) at ``T`` down to ``eps``."""
        return self._integrate(score, sde, x, sde.T, eps)

    def _integrate(self, score: CountingScore, sde: SDE, x: torch.Tensor, t0: float,
                   t1: float) -> torch.Tensor:
        """Integrate the probability flow from ``t0`` to ``t1`` in float64, the score in ``x``'s
        dtype; example by example with ``per_example``."""

        def rhs(t: float, y: torch.Tensor) -> torch.Tensor:
            score.step = score.nfe  # the ODE's steps are its right-hand-side evaluations
            return probability_flow_drift(score, sde, y, t, dtype=x.dtype)

        def solve(x0: torch.Tensor) -> torch.Tensor:
            y, _ = integrate(rhs, x0.double(), t0, t1, method=self.method, rtol=self.rtol, atol=self.atol,
                             blas_threads=self.blas_threads)
            return y.to(x.dtype)

        if not self.per_example:
            return solve(x)
        return torch.cat([solve(x[i:i + 1]) for i in range(x.shape[0])])

    def decode(self, score_fn: ScoreFn, sde: SDE, z: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Latent ``z`` at ``T`` -> data at ``eps`` (no denoising): the inverse of :meth:`encode`."""
        return self._flow(score_fn, sde, z, sde.T, self.end_time(sde), progress, "ode decode")

    def encode(self, score_fn: ScoreFn, sde: SDE, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Data ``x`` at ``eps`` -> latent ``z`` at ``T`` (the probability flow run forward)."""
        return self._flow(score_fn, sde, x, self.end_time(sde), sde.T, progress, "ode encode")

    @torch.no_grad()
    def _flow(self, score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t0: float, t1: float, progress: bool,
              desc: str) -> torch.Tensor:
        with tqdm(desc=desc, unit="nfe", disable=not progress, leave=False) as bar:
            score = CountingScore(score_fn, self.check_finite, bar=bar)
            y = self._integrate(score, sde, x, t0, t1)
        self.nfe = score.nfe
        return y
