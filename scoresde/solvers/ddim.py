"""DDIM (Song, Meng & Ermon 2021) for any of our SDEs, written with ``m(t)`` and ``s(t)``.

From ``t_i`` to ``t_{i+1} < t_i``, with the model's noise ``eps = -s(t_i) score(x, t_i)`` and data
``x0 = (x - s(t_i) eps) / m(t_i)`` predictions (:mod:`.predictions`),

    x_{i+1} = m(t_{i+1}) x0 + sqrt(s(t_{i+1})^2 - sigma_i^2) eps + sigma_i z,
    sigma_i = eta s(t_{i+1}) sqrt(1 - exp(-2 h_i)),   h_i = lambda(t_{i+1}) - lambda(t_i).

``sigma_i`` at ``eta = 1`` is the standard deviation of the forward process's posterior
``q(x_{t_{i+1}} | x_{t_i}, x_0)`` (the ancestral step); at ``eta = 0`` the step is deterministic and
equals the first-order exponential integrator of the probability flow (DPM-Solver-1), so it is
exact for a Gaussian data distribution of one point and first order in general.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..score import ScoreFn
from ..sde import SDE
from .base import Sampler
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
        super().__init__(eps=eps, denoise=denoise, check_finite=check_finite)
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: ancestral), got {eta}")
        if time_grid not in TIME_GRIDS:
            raise ValueError(f"unknown time grid {time_grid!r}; valid: {', '.join(TIME_GRIDS)}")
        self.steps, self.eta, self.time_grid = int(steps), float(eta), time_grid

    @torch.no_grad()
    def sample(self, score_fn: ScoreFn, sde: SDE, shape, *, generator: torch.Generator | None = None,
               seeds: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = False, device=None, dtype=torch.float32) -> torch.Tensor:
        counter, noise, x = self._start(score_fn, sde, shape, generator, seeds, x_T, device, dtype)
        eps = self._eps(sde)
        times = time_steps(sde, self.time_grid, self.steps, sde.T, eps)
        for i, (t, t_next) in enumerate(tqdm(list(zip(times[:-1], times[1:])), desc="ddim",
                                             disable=not progress, leave=False)):
            counter.step = i
            m, s = sde.mean_coef(t), sde.std(t)
            m_next, s_next = sde.mean_coef(t_next), sde.std(t_next)
            h = log_snr(sde, t_next) - log_snr(sde, t)
            sigma = self.eta * s_next * math.sqrt(-math.expm1(-2.0 * h))
            e = noise_prediction(counter, sde, x, t)
            x0 = (x - s * e) / m
            x = x0 * m_next + e * math.sqrt(max(s_next**2 - sigma**2, 0.0))
            if sigma > 0.0:
                x = x + noise(sigma)
        return self._finish(counter, sde, x, eps)
