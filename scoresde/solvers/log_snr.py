"""The half log signal-to-noise ratio ``lambda(t) = log m(t) - log s(t)`` of an SDE, its inverse, and
the time grids of the few-step samplers.

``lambda`` decreases from ``+inf`` at ``t = 0`` to ``lambda(T)``; the exponential integrators
(DDIM, DPM-Solver) step in it and EDM's Heun uses the noise level ``sigma(t) = s(t) / m(t) =
exp(-lambda(t))``. The inverse ``t(lambda)`` is closed-form for our SDEs (with ``b0 = beta_min``,
``b1 = beta_max`` and ``log m(t) = -(b1 - b0) t^2 / 4 - b0 t / 2``):

* VP: ``m^2 = 1 / (1 + e^{-2 lambda})``, so ``log m = -log(1 + e^{-2 lambda}) / 2``;
* sub-VP (``s = 1 - m^2``): ``m = e^lambda (1 - m^2)`` gives ``log m = -asinh(e^{-lambda} / 2)``;
  both then solve the quadratic in ``t`` (in its cancellation-free form);
* VE: ``lambda = -log sigma(t)``, ``t = (-lambda - log sigma_min) / log(sigma_max / sigma_min)``.

Any other SDE is inverted numerically (``scipy.optimize.brentq``). All in float64 Python floats:
grids are computed once per call.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from ..sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = ["log_snr", "time_at_log_snr", "noise_level", "time_at_noise_level", "time_steps", "TIME_GRIDS"]

#: the spacings of ``time_steps``
TIME_GRIDS = ("logsnr", "time_uniform", "time_quadratic")


def log_snr(sde: SDE, t: float) -> float:
    """``lambda(t) = log m(t) - log s(t)``."""
    t = float(t)
    return sde.log_mean_coef(t) - math.log(sde.std(t))


def _time_at_log_mean(sde: VPSDE | SubVPSDE, log_m: float) -> float:
    """The root ``t >= 0`` of ``A t^2 + B t + c = 0`` with ``A = (b1 - b0) / 4``, ``B = b0 / 2``,
    ``c = log m``, as ``-2c / (B + sqrt(B^2 - 4Ac))`` (no cancellation at small ``t``)."""
    a, b = (sde.beta_max - sde.beta_min) / 4.0, sde.beta_min / 2.0
    return -2.0 * log_m / (b + math.sqrt(b * b - 4.0 * a * log_m))


def time_at_log_snr(sde: SDE, lam: float) -> float:
    """The time ``t`` with ``lambda(t) = lam`` (closed form for VP, sub-VP, VE; see the module)."""
    lam = float(lam)
    if isinstance(sde, VPSDE):
        return _time_at_log_mean(sde, -0.5 * float(np.logaddexp(0.0, -2.0 * lam)))
    if isinstance(sde, SubVPSDE):
        return _time_at_log_mean(sde, -math.asinh(0.5 * math.exp(-lam)))
    if isinstance(sde, VESDE):
        return (-lam - math.log(sde.sigma_min)) / sde.log_ratio
    lo, hi = 1e-12, sde.T
    if not log_snr(sde, hi) <= lam <= log_snr(sde, lo):
        raise ValueError(f"log-SNR {lam:.6g} lies outside [lambda(T), lambda(1e-12)] of {sde!r}")
    return brentq(lambda t: log_snr(sde, t) - lam, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)


def noise_level(sde: SDE, t: float) -> float:
    """EDM's ``sigma(t) = s(t) / m(t) = exp(-lambda(t))``, the noise level of ``x / m(t)``."""
    return math.exp(-log_snr(sde, t))


def time_at_noise_level(sde: SDE, sigma: float) -> float:
    """The time ``t`` with ``sigma(t) = sigma``."""
    return time_at_log_snr(sde, -math.log(sigma))


def time_steps(sde: SDE, grid: str, steps: int, t_start: float, t_end: float) -> list[float]:
    """``steps + 1`` times from ``t_start`` down to ``t_end``: uniform in ``lambda`` (``logsnr``), in
    ``t`` (``time_uniform``) or in ``sqrt(t)`` (``time_quadratic``, DPM-Solver's ``time_quadratic``)."""
    if grid == "logsnr":
        lams = np.linspace(log_snr(sde, t_start), log_snr(sde, t_end), steps + 1)
        times = [time_at_log_snr(sde, lam) for lam in lams]
    elif grid == "time_uniform":
        times = np.linspace(t_start, t_end, steps + 1).tolist()
    elif grid == "time_quadratic":
        times = (np.linspace(math.sqrt(t_start), math.sqrt(t_end), steps + 1) ** 2).tolist()
    else:
        raise ValueError(f"unknown time grid {grid!r}; valid: {', '.join(TIME_GRIDS)}")
    times[0], times[-1] = float(t_start), float(t_end)  # the ends exactly, not through the inverse
    return [float(t) for t in times]
