"""EDM's second-order sampler (Karras et al. 2022, Algorithm 2) on the noise level of any of our SDEs.

In the scaled variable ``x_hat = x / m(t)`` every SDE's kernel is ``x_hat = x_0 + sigma z`` with
``sigma(t) = s(t) / m(t) = exp(-lambda(t))``, and the probability flow reads

    d x_hat / d sigma = (x_hat - D(x_hat; sigma)) / sigma,   D(x_hat; sigma) = x0(m(t) x_hat, t(sigma)),

``D`` the data prediction (:func:`.predictions.data_prediction`). On EDM's grid
``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
``i < N``, ``sigma_N = 0`` (``sigma_max = sigma(T)``, ``sigma_min = sigma(eps)``), each step optionally
raises the noise to ``sigma_hat = (1 + gamma_i) sigma_i`` with fresh noise (``churn``), takes an Euler
step to ``sigma_{i+1}`` and corrects it with the trapezoidal rule (Heun), except the last step to
``sigma_N = 0``, which is Euler: it returns ``D(x_hat; sigma_min)``, the denoised data at ``t = 0``.
``2 N - 1`` score evaluations; with ``denoise_to_zero=False`` the last step is left out and the state at
``sigma_min`` (``t = eps``) is returned, ``2 N - 2`` evaluations.
"""

from __future__ import annotations

import math

from .base import Sampler
from .log_snr import noise_level, time_at_noise_level
from .predictions import data_prediction

__all__ = ["Heun", "edm_sigmas"]


def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """EDM's ``steps`` noise levels spaced evenly in ``sigma^(1/rho)`` from ``sigma_max`` to
    ``sigma_min``, then ``0``."""
    if steps == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]


class Heun(Sampler):
    """EDM's Heun sampler with ``steps`` noise levels (``2 steps - 1`` score evaluations).

    Args:
        steps: ``N``, the number of noise levels above zero (EDM: 18, i.e. 35 evaluations).
        rho: the grid's exponent (EDM: 7), > 0.
        churn: EDM's ``S_churn`` (0: deterministic); ``gamma_i = min(churn / N, sqrt(2) - 1)`` on levels
            ``s_tmin <= sigma_i <= s_tmax``, fresh noise of scale ``s_noise``.
        denoise_to_zero: take EDM's last (Euler) step from ``sigma_min`` to ``sigma = 0``, whose result is
            the denoised ``D(x_hat; sigma_min)`` (``2 N - 1`` evaluations, EDM's sampler); ``False`` stops at
            ``t = eps`` with the state ``x_eps`` itself (``2 N - 2`` evaluations), the endpoint of the
            other few-step samplers (DPM-Solver's ``denoise_to_zero=False``), so that they compare there.
        eps: sets ``sigma_min = sigma(eps)`` (default the SDE's ``sampling_eps``); ``check_finite`` as
            :class:`~scoresde.solvers.base.Sampler`.

    With churn, ``sigma_hat`` may exceed ``sigma(T)`` at the first level, i.e. ``t > T`` (as EDM's
    ``sigma > sigma_max``); ``s_tmax`` below ``sigma(T)`` avoids it.
    """

    def __init__(self, steps: int = 18, rho: float = 7.0, churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0, denoise_to_zero: bool = True,
                 eps: float | None = None, check_finite: bool = True):
        super().__init__(steps, eps=eps, denoise=False, check_finite=check_finite)
        if not denoise_to_zero and int(steps) < 2:
            raise ValueError(f"Heun(denoise_to_zero=False) stops at sigma_min, the last of its `steps` "
                             f"levels: it needs steps >= 2, got steps={steps}")
        if not float(rho) > 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        if float(churn) < 0 or float(s_noise) < 0:
            raise ValueError(f"churn and s_noise must be >= 0, got churn={churn}, s_noise={s_noise}")
        if not 0 <= float(s_tmin) <= float(s_tmax):
            raise ValueError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
        self.rho, self.churn = float(rho), float(churn)
        self.s_tmin, self.s_tmax, self.s_noise = float(s_tmin), float(s_tmax), float(s_noise)
        self.denoise_to_zero = bool(denoise_to_zero)

    def _planned_nfe(self) -> int:
        return 2 * self.steps - 1 if self.denoise_to_zero else 2 * self.steps - 2

    def _solve(self, score, sde, x, eps, noise):
        sigmas = edm_sigmas(self.steps, noise_level(sde, eps), noise_level(sde, sde.T), self.rho)

        def denoiser(x_hat, sigma):
            t = time_at_noise_level(sde, sigma)
            return data_prediction(score, sde, x_hat * sde.mean_coef(t), t)

        x_hat = x / sde.mean_coef(sde.T)
        gamma_max = min(self.churn / self.steps, math.sqrt(2.0) - 1.0)
        for i in range(self.steps if self.denoise_to_zero else self.steps - 1):
            score.step = i
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            gamma = gamma_max if self.s_tmin <= sigma <= self.s_tmax else 0.0
            sigma_hat = sigma * (1.0 + gamma)
            if gamma > 0.0:
                x_hat = x_hat + noise(self.s_noise * math.sqrt(sigma_hat**2 - sigma**2))
            d = (x_hat - denoiser(x_hat, sigma_hat)) / sigma_hat
            x_next = x_hat + (sigma_next - sigma_hat) * d
            if sigma_next > 0.0:
                d_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
                x_next = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
            x_hat = x_next
        return x_hat if self.denoise_to_zero else x_hat * sde.mean_coef(eps)
