"""Predictor-corrector sampling (Song et al. 2021, Algorithm 1 and Appendix G).

On the grid ``T = t_0 > t_1 > ... > t_N = eps`` each step corrects the samples at ``t_i`` with
``corrector_steps`` Langevin-type moves towards ``p_{t_i}``, then predicts ``t_{i+1}`` with one
reverse-time step. Every predictor and corrector is one short function of the same signature,
``(x, step, score, sde, noise) -> (x, x_mean)`` for predictors and
``(x, step, score, sde, noise, snr) -> (x, x_mean)`` for correctors, with ``step`` a :class:`Step`
(the time, the step size and the SDE's coefficients of ``t_i -> t_{i+1}``), ``score(x)`` the score at
``t_i``, ``noise()`` a fresh standard normal draw and ``x_mean`` the update without its noise.

The coefficients of a step come from the SDE (:meth:`SDE.transition`, :meth:`SDE.langevin_alpha`,
:meth:`SDE.std`), evaluated for the whole grid at once (:meth:`Step.grid`): per step they cost ~30
small float64 tensor operations, about 4% of a step with the benchmark's U-Net
(benchmarks/README.md), so they are not recomputed inside the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from ..sde import SDE
from .base import Sampler, one_of, time_grid

__all__ = ["PredictorCorrector", "PREDICTORS", "CORRECTORS", "Step"]


class Step(NamedTuple):
    """One step ``t -> t - dt`` of the grid (Python floats): the exact forward transition
    ``x_t = r x_{t-dt} + q z`` (:meth:`SDE.transition`), the Langevin signal scale ``alpha``
    (:meth:`SDE.langevin_alpha`) and the kernel's standard deviations ``std = s(t)``,
    ``std_next = s(t - dt)``."""

    t: float
    dt: float
    r: float
    q: float
    alpha: float
    std: float
    std_next: float

    @classmethod
    def grid(cls, sde: SDE, steps: int, eps: float) -> list[Step]:
        """The ``steps`` steps from ``T`` to ``eps``."""
        times = time_grid(steps, eps, sde.T)
        t, dt = times[:-1], times[:-1] - times[1:]
        r, q = sde.transition(t, dt)
        columns = (t, dt, r, q, sde.langevin_alpha(t, dt), sde.std(t), sde.std(times[1:]))
        return [cls(*row) for row in zip(*(c.tolist() for c in columns))]


# --- predictors: t -> t - dt ---------------------------------------------------------------
def euler_maruyama_predictor(x, step: Step, score, sde: SDE, noise):
    """``x_mean = x - [f - g^2 score] dt``, ``x = x_mean + g sqrt(dt) z``."""
    x_mean = x - sde.reverse_drift(x, step.t, score(x)) * step.dt
    return x_mean + sde.diffusion(step.t) * math.sqrt(step.dt) * noise(), x_mean


def reverse_diffusion_predictor(x, step: Step, score, sde: SDE, noise):
    """Reverse of the forward discretisation ``x_t = x_{t-dt} + f + G z`` (eq. 46-47):
    ``x_mean = x - f + G^2 score``, ``x = x_mean + G z``; with the exact Gaussian transition
    ``x_t = r x_{t-dt} + q z`` the forward step's ``f = (r - 1) x`` and ``G = q`` (for VP DDPM's
    ``sqrt(1 - beta_i)`` and ``sqrt(beta_i)``, for VE SMLD's ``sqrt(sigma_i^2 - sigma_{i-1}^2)``)."""
    f, G = (step.r - 1.0) * x, step.q
    x_mean = x - f + G**2 * score(x)
    return x_mean + G * noise(), x_mean


def ancestral_predictor(x, step: Step, score, sde: SDE, noise):
    """Ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x_0)`` with ``x_0`` replaced by
    its Tweedie estimate. With the exact transition ``x_t = r x_s + q z`` (``s = t - dt``):
    ``x_mean = (x + q^2 score) / r`` and noise variance ``q^2 s(s)^2 / s(t)^2``. For VE this is the
    paper's SMLD ancestral step; for VP it is DDPM's step with the posterior variance ``beta_tilde``
    (the paper's code uses the upper choice ``beta``); it is defined for sub-VP as well."""
    r, q = step.r, step.q
    x_mean = (x + q**2 * score(x)) / r
    return x_mean + q * step.std_next / step.std * noise(), x_mean


def no_predictor(x, step, score, sde, noise):
    """No prediction (corrector-only sampling)."""
    return x, x


# --- correctors at fixed t -------------------------------------------------------------------
def langevin_corrector(x, step: Step, score, sde: SDE, noise, snr: float):
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
    h = 2.0 * step.alpha * (snr * step.std) ** 2
    x_mean = x + h * score(x)
    return x_mean + math.sqrt(2.0 * h) * noise(), x_mean


def ald_corrector(x, step: Step, score, sde: SDE, noise, snr: float):
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019): ``h = 2 (snr s(t))^2``, the step
    proportional to the noise variance with no signal scale (``alpha = 1``, as NCSN's VE setting;
    for VE it coincides with :func:`langevin_corrector`)."""
    h = 2.0 * (snr * step.std) ** 2
    x_mean = x + h * score(x)
    return x_mean + math.sqrt(2.0 * h) * noise(), x_mean


def no_corrector(x, step, score, sde, noise, snr):
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
        super().__init__(steps, eps=eps, denoise=denoise, check_finite=check_finite)
        one_of("predictor", predictor, PREDICTORS)
        one_of("corrector", corrector, CORRECTORS)
        if int(corrector_steps) < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
        if not float(snr) >= 0:
            raise ValueError(f"snr must be >= 0, got {snr}")
        self.predictor, self.corrector = predictor, corrector
        self.snr, self.corrector_steps = float(snr), int(corrector_steps)
        self._n_correct = self.corrector_steps if corrector != "none" else 0

    def _planned_nfe(self) -> int:
        return self.steps * (self._n_correct + (self.predictor != "none"))

    def _solve(self, score, sde, x, eps, noise):
        predict, correct = PREDICTORS[self.predictor], CORRECTORS[self.corrector]
        for i, step in enumerate(Step.grid(sde, self.steps, eps)):
            score.step = i

            def score_t(y, t=step.t):
                return score(y, t)

            for _ in range(self._n_correct):
                x, _ = correct(x, step, score_t, sde, noise, self.snr)
            x, _ = predict(x, step, score_t, sde, noise)
        return x
