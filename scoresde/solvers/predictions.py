"""What a diffusion model predicts, written with the score: the noise and the data (Tweedie).

With the kernel ``x_t = m(t) x_0 + s(t) z`` (``alpha_t``/``sigma_t`` in the DPM-Solver papers,
``m``/``s`` here as in :mod:`scoresde.sde`):

    noise prediction   z_hat(x, t) = -s(t) grad log p_t(x),
    data prediction    x0(x, t)    = (x + s(t)^2 grad log p_t(x)) / m(t)      (Tweedie's formula).

Every few-step sampler (DDIM, DPM-Solver, EDM's Heun) takes its predictions from here. ``t`` is a
Python float, one time for the whole batch, as in the samplers' inner loops.
"""

from __future__ import annotations

import torch

from ..score import ScoreFn
from ..sde import SDE
from .base import batch_time, tweedie_denoise

__all__ = ["noise_prediction", "data_prediction"]


def noise_prediction(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t: float) -> torch.Tensor:
    """``z_hat(x, t) = -s(t) score(x, t)``: the noise ``z`` of ``x_t = m(t) x_0 + s(t) z`` it predicts
    (the papers' ``epsilon_theta``; in the samplers ``eps`` is only the last time of sampling)."""
    return score_fn(x, batch_time(x, float(t))) * -sde.std(float(t))


def data_prediction(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t: float) -> torch.Tensor:
    """``x0(x, t) = (x + s(t)^2 score(x, t)) / m(t)``, the posterior mean ``E[x_0 | x_t = x]``
    (:func:`~scoresde.solvers.base.tweedie_denoise` at one time for the batch)."""
    return tweedie_denoise(score_fn, sde, x, batch_time(x, float(t)))
