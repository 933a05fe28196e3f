"""DDIM (Song, Meng & Ermon 2021) for any of our SDEs, written with ``m(t)`` and ``s(t)``.

From ``t_i`` to ``t_{i+1} < t_i``, with the model's noise ``z_hat = -s(t_i) score(x, t_i)`` and data
``x0 = (x - s(t_i) z_hat) / m(t_i)`` predictions (:mod:`.predictions`; the DDIM paper's ``epsilon_theta``
is ``z_hat``: ``eps`` is the last time of sampling, as in every sampler here),

    x_{i+1} = m(t_{i+1}) x0 + sqrt(s(t_{i+1})^2 - sigma_i^2) z_hat + sigma_i z,
    sigma_i = eta s(t_{i+1}) sqrt(1 - exp(-2 h_i)),   h_i = lambda(t_{i+1}) - lambda(t_i).

``sigma_i`` at ``eta = 1`` is the standard deviation of the forward process's posterior
``q(x_{t_{i+1}} | x_{t_i}, x_0)`` (the ancestral step); at ``eta = 0`` the step is deterministic and
equals the first-order exponential integrator of the probability flow (DPM-Solver-1), so it is
exact for a Gaussian data distribution of one point and first order in general.
"""

from __future__ import annotations

import math

from .base import Sampler, one_of
from .log_snr import TIME_GRIDS, log_snr, time_steps
from .predictions import noise_prediction

__all__ = ["DDIM"]


class DDIM(Sampler):
    """DDIM with ``steps`` score evaluations (plus one with ``denoise``).

    Args:
        steps: number of steps (score evaluations) from ``T`` to ``eps``.
        eta: stochasticity in ``[0, 1]``: 0 the deterministic DDIM, 1 the ancestral step.
        time_grid: ``time_uniform`` (DDIM's), ``logsnr`` or ``time_quadratic``
            (see :func:`.log_snr.time_steps`).
        eps, denoise, check_finite: see :class:`~scoresde.solvers.base.Sampler`.
    """

    def __init__(self, steps: int = 50, eta: float = 0.0, time_grid: str = "time_uniform",
                 eps: float | None = None, denoise: bool = True, check_finite: bool = True):
        super().__init__(steps, eps=eps, denoise=denoise, check_finite=check_finite)
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: ancestral), got {eta}")
        one_of("time grid", time_grid, TIME_GRIDS)
        self.eta, self.time_grid = float(eta), time_grid

    def _planned_nfe(self) -> int:
        return self.steps

    def _solve(self, score, sde, x, eps, noise):
        times = time_steps(sde, self.time_grid, self.steps, sde.T, eps)
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
            score.step = i
            m, s = sde.mean_coef(t), sde.std(t)
            m_next, s_next = sde.mean_coef(t_next), sde.std(t_next)
            h = log_snr(sde, t_next) - log_snr(sde, t)
            sigma = self.eta * s_next * math.sqrt(-math.expm1(-2.0 * h))
            z_hat = noise_prediction(score, sde, x, t)
            x0 = (x - s * z_hat) / m
            x = x0 * m_next + z_hat * math.sqrt(max(s_next**2 - sigma**2, 0.0))
            if sigma > 0.0:
                x = x + noise(sigma)
        return x
