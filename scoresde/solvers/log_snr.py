"""The time grids of the few-step samplers, in the half log signal-to-noise ratio
``lambda(t) = log m(t) - log s(t)`` of an SDE or in its noise level.

``lambda`` decreases from ``+inf`` at ``t = 0`` to ``lambda(T)``; the exponential integrators
(DDIM, DPM-Solver, UniPC) step in it and EDM's Heun uses the noise level ``sigma(t) = s(t) / m(t) =
exp(-lambda(t))``. The SDE owns the map and its inverse (:meth:`~scoresde.sde.SDE.log_snr`,
:meth:`~scoresde.sde.SDE.time_at_log_snr`: closed forms for VP, sub-VP and VE, a bisection for any other
schedule); here they are read as Python floats, one time for the whole batch, computed once per call.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..sde import SDE

__all__ = ["log_snr", "time_at_log_snr", "noise_level", "time_at_noise_level", "time_steps", "TIME_GRIDS"]

#: the spacings of ``time_steps``
TIME_GRIDS = ("logsnr", "time_uniform", "time_quadratic")


def log_snr(sde: SDE, t: float) -> float:
    """``lambda(t) = log m(t) - log s(t)`` (:meth:`SDE.log_snr <scoresde.sde.SDE.log_snr>`)."""
    return float(sde.log_snr(float(t)))


def time_at_log_snr(sde: SDE, lam: float) -> float:
    """The time ``t`` with ``lambda(t) = lam`` (:meth:`SDE.time_at_log_snr
    <scoresde.sde.SDE.time_at_log_snr>`)."""
    return float(sde.time_at_log_snr(float(lam)))


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
        times = sde.time_at_log_snr(torch.from_numpy(lams)).tolist()
    elif grid == "time_uniform":
        times = np.linspace(t_start, t_end, steps + 1).tolist()
    elif grid == "time_quadratic":
        times = (np.linspace(math.sqrt(t_start), math.sqrt(t_end), steps + 1) ** 2).tolist()
    else:
        raise ValueError(f"unknown time grid {grid!r}; valid: {', '.join(TIME_GRIDS)}")
    times[0], times[-1] = float(t_start), float(t_end)  # the ends exactly, not through the inverse
    return [float(t) for t in times]
