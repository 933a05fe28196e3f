"""Predictor-corrector sampling (Song et al. 2021, Algorithm 1 and Appendix G).

On the grid ``T = t_0 > t_1 > ... > t_N = eps`` each step corrects the samples at ``t_i`` with
``corrector_steps`` Langevin-type moves towards ``p_{t_i}``, then predicts ``t_{i+1}`` with one
reverse-time step. Every predictor and corrector is one short function of the same signature,
``(x, t, dt, score, sde, noise) -> (x, x_mean)`` for predictors and
``(x, t, dt, score, sde, noise, snr) -> (x, x_mean)`` for correctors: ``t`` the current time (a
0-d float64 tensor), ``dt > 0`` the step to ``t - dt``, ``score(x)`` the score at ``t``, ``noise()``
a fresh standard normal draw and ``x_mean`` the update without its noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..score import ScoreFn
from ..sde import SDE
from .base import Sampler, time_grid

__all__ = ["PredictorCorrector", "PREDICTORS", "CORRECTORS"]


# --- predictors: t -> t - dt ---------------------------------------------------------------
def euler_maruyama_predictor(x, t, dt, score, sde: SDE, noise):
    """``x_mean = x - [f - g^2 score] dt``, ``x = x_mean + g sqrt(dt) z``."""
    x_mean = x - sde.reverse_drift(x, t, score(x)) * dt
    return x_mean + sde.diffusion(t) * math.sqrt(dt) * noise(), x_mean


def reverse_diffusion_predictor(x, t, dt, score, sde: SDE, noise):
    """Reverse of the forward discretisation ``x_t = x_{t-dt} + f + G z`` (eq. 46-47):
    ``x_mean = x - f + G^2 score``, ``x = x_mean + G z``, with the exact Gaussian transition for
    ``(f, G)`` (:meth:`SDE.discretize`)."""
    f, G = sde.discretize(x, t, dt)
    x_mean = x - f + G**2 * score(x)
    return x_mean + G * noise(), x_mean


def ancestral_predictor(x, t, dt, score, sde: SDE, noise):
    """Ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x_0)`` with ``x_0`` replaced by
    its Tweedie estimate. With the exact transition ``x_t = r x_s + q z`` (``s = t - dt``):
    ``x_mean = (x + q^2 score) / r`` and noise variance ``q^2 s(s)^2 / s(t)^2``. For VE this is the
    paper's SMLD ancestral step; for VP it is DDPM's step with the posterior variance ``beta_tilde``
    (the paper's code uses the upper choice ``beta``); it is defined for sub-VP as well."""
    r, q = sde.transition(t, dt)
    x_mean = (x + q**2 * score(x)) / r
    return x_mean + q * sde.std(t - dt) / sde.std(t) * noise(), x_mean


def no_predictor(x, t, dt, score, sde, noise):
    """No prediction (corrector-only sampling)."""
    return x, x


# --- correctors at fixed t -------------------------------------------------------------------
def langevin_corrector(x, t, dt, score, sde: SDE, noise, snr: float):
    """Langevin MCMC at fixed ``t`` (Algorithm 5): ``x_mean = x + h s``, ``x = x_mean + sqrt(2 h) z``,

        h = 2 alpha snr^2 E||z||^2 / E||s||^2  with  E||z||^2 = D,  E||s||^2 -> D / s(t)^2,

    i.e. ``h = 2 alpha (snr s(t))^2`` with ``alpha`` = :meth:`SDE.langevin_alpha`.

    Why not the paper's rule ``h = 2 alpha (snr ||z|| / ||s||)^2``: its code averages the norms
    over the batch, so a sample changes with the batch it is drawn in; taking each sample's own
    norms instead makes ``h`` depend on the sample's state, which breaks the invariance of ``p_t``
    (samples near a mode, where ``||s||`` is small, take huge steps: in 2-D the variance inflates
    and the step blows up as ``||s|| -> 0``). Here both norms are replaced by population values
    that need no batch: ``E||z||^2 = D`` exactly, and ``E||s||^2`` by ``D / s(t)^2``, its upper
    bound (the Fisher information of ``p_t = p_0 * N(0, s^2 I)`` never exceeds the kernel's; the
    two agree at high noise, where the paper's rule is calibrated). The step is a function of
    ``t`` alone: batch-independent, unbiased as ``h -> 0``, and bounded everywhere."""
    h = 2.0 * sde.langevin_alpha(t, dt) * (snr * sde.std(t)) ** 2
    x_mean = x + h * score(x)
    return x_mean + torch.sqrt(2.0 * h) * noise(), x_mean


def ald_corrector(x, t, dt, score, sde: SDE, noise, snr: float):
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019): ``h = 2 (snr s(t))^2``, the step
    proportional to the noise variance with no signal scale (``alpha = 1``, as NCSN's VE setting;
    for VE it coincides with :func:`langevin_corrector`)."""
    h = 2.0 * (snr * sde.std(t)) ** 2
    x_mean = x + h * score(x)
    return x_mean + torch.sqrt(2.0 * h) * noise(), x_mean


def no_corrector(x, t, dt, score, sde, noise, snr):
    """No correction."""
    return x, x


PREDICTORS: dict[str, Callable] = {
    "euler_maruyama": euler_maruyama_predictor,
    "reverse_diffusion": reverse_diffusion_predictor,
    "ancestral": ancestral_predictor,
    "none": no_predictor,
}
CORRECTORS: dict[str, Callable] = {"langevin": langevin_corrector, "ald": ald_corrector, "none": no_corrector}


class PredictorCorrector(Sampler):
    """Predictor-corrector sampler.

    Args:
        predictor: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral`` or ``none``.
        corrector: ``langevin``, ``ald`` or ``none``.
        snr: signal-to-noise ratio of the corrector (the paper's 0.16).
        corrector_steps: corrector moves per step.
        steps: predictor steps from ``T`` to ``eps``.
        eps, denoise, check_finite: see :class:`~scoresde.solvers.base.Sampler`. The sampler returns
            the state after the last predictor step (its noise included), or with ``denoise`` its
            Tweedie estimate, as every sampler does.
    """

    def __init__(self, predictor: str = "reverse_diffusion", corrector: str = "langevin", snr: float = 0.16,
                 corrector_steps: int = 1, steps: int = 1000, eps: float | None = None,
                 denoise: bool = True, check_finite: bool = True):
        super().__init__(eps=eps, denoise=denoise, check_finite=check_finite)
        if predictor not in PREDICTORS:
            raise ValueError(f"unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS)}")
        if corrector not in CORRECTORS:
            raise ValueError(f"unknown corrector {corrector!r}; valid: {', '.join(CORRECTORS)}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if int(corrector_steps) < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
        if not float(snr) >= 0:
            raise ValueError(f"snr must be >= 0, got {snr}")
        self.predictor, self.corrector = predictor, corrector
        self.snr, self.corrector_steps, self.steps = float(snr), int(corrector_steps), int(steps)

    @torch.no_grad()
    def sample(self, score_fn: ScoreFn, sde: SDE, shape, *, generator: torch.Generator | None = None,
               seeds: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = False, device=None, dtype=torch.float32) -> torch.Tensor:
        counter, noise, x = self._start(score_fn, sde, shape, generator, seeds, x_T, device, dtype)
        predict, correct = PREDICTORS[self.predictor], CORRECTORS[self.corrector]
        n_correct = self.corrector_steps if self.corrector != "none" else 0
        eps = self._eps(sde)
        times = time_grid(self.steps, eps, sde.T)
        for i in tqdm(range(self.steps), desc=f"pc {self.predictor}/{self.corrector}", disable=not progress,
                      leave=False):
            counter.step = i
            t, dt = times[i], float(times[i] - times[i + 1])
            t_batch = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)

            def score(y, t_batch=t_batch):
                return counter(y, t_batch)

            for _ in range(n_correct):
                x, _ = correct(x, t, dt, score, sde, noise, self.snr)
            x, _ = predict(x, t, dt, score, sde, noise)
        return self._finish(counter, sde, x, eps)
