"""The reverse-time SDE (Song et al. eq. 6) integrated by ``torchsde.sdeint``.

    dx = [f(x, t) - g(t)^2 grad log p_t(x)] dt + g(t) dw_bar,   t from T down to eps.

torchsde integrates forward in time on 2-D states, so we integrate in ``s = T - t`` on the
flattened data: ``dx = -[f - g^2 score](x, T - s) ds + g(T - s) dW_s``. The noise does not depend on
``x`` (additive), so Ito and Stratonovich coincide and torchsde's Stratonovich methods (``heun``,
``midpoint``, ``euler_heun``) are as valid as the Ito ones (``euler``, ``milstein``, ``srk``).
(``reversible_heun`` is left out: its small stability region diverges on the stiff score near
``t = 0`` at practical step counts.)

Brownian motion: fixed steps draw fresh Gaussian increments from the sample's generator
(:class:`~scoresde.solvers.brownian.FreshBrownian`: per-sample seeds stay exact, and torchsde's
``BrownianInterval`` costs ~10x a small model's step); adaptive stepping revisits intervals and keeps
``BrownianInterval``. torchsde checks the shapes of the drift at the start before it integrates,
so the score is evaluated ``steps + 1`` times (``+ 1`` with ``denoise``).
"""

from __future__ import annotations

import warnings

import torch
import torchsde

from ..sde import SDE
from .base import CountingScore, Sampler, one_of
from .brownian import FreshBrownian

__all__ = ["ReverseSDESolver", "EulerMaruyama", "SDE_METHODS"]

#: torchsde method -> the SDE type we declare for it (equivalent for additive noise)
SDE_METHODS = {
    "euler": "ito", "milstein": "ito", "srk": "ito",
    "heun": "stratonovich", "midpoint": "stratonovich", "euler_heun": "stratonovich",
}
#: drift (score) evaluations per fixed step where more than one (torchsde 0.2.6)
DRIFTS_PER_STEP = {"heun": 2, "midpoint": 2, "srk": 10}


class _ReverseSDE(torch.nn.Module):
    """The reverse-time SDE in forward time ``s = T - t`` on flattened states, for torchsde:
    drift ``-reverse_drift(x, T - s)`` (:meth:`SDE.reverse_drift`), diffusion ``g(T - s)``."""

    noise_type = "diagonal"

    def __init__(self, sde: SDE, score: CountingScore, shape, sde_type: str, step_size: float):
        super().__init__()
        self.sde, self.score, self.shape, self.sde_type = sde, score, tuple(shape), sde_type
        self.step_size = step_size

    def f(self, s, y):
        t = self.sde.T - float(s)
        self.score.step = round(float(s) / self.step_size) if self.step_size else float(s)
        x = y.view(self.shape)
        return -self.sde.reverse_drift(x, t, self.score(x, t)).view(y.shape)

    def g(self, s, y):
        return self.sde.diffusion(self.sde.T - float(s)).to(y.dtype).expand_as(y)


class ReverseSDESolver(Sampler):
    """The reverse-time SDE integrated by ``torchsde.sdeint`` with any of its schemes (the class for
    ``method="euler"`` alone is :class:`EulerMaruyama`).

    Args:
        steps: number of fixed steps from ``T`` to ``eps`` (initial step count when ``adaptive``).
        method: a torchsde method for diagonal/additive noise: ``euler`` (Euler-Maruyama), ``milstein``
            (grad-free, identical to Euler here since ``g`` does not depend on ``x``), ``srk``
            (stochastic Runge-Kutta, strong order 1.5), ``heun``, ``midpoint``, ``euler_heun``.
        adaptive: torchsde's adaptive step-size control (with ``rtol``, ``atol``, ``dt_min``); uses
            torchsde's ``BrownianInterval`` (seeded per call).
        eps, denoise, check_finite: see :class:`~scoresde.solvers.base.Sampler`. ``denoise`` defaults
            to True as the paper's ``noise_removal``.
    """

    def __init__(self, steps: int = 1000, method: str = "euler", adaptive: bool = False, rtol: float = 1e-3,
                 atol: float = 1e-3, dt_min: float = 1e-5, eps: float | None = None, denoise: bool = True,
                 check_finite: bool = True):
        super().__init__(steps, eps=eps, denoise=denoise, check_finite=check_finite)
        one_of("torchsde method", method, sorted(SDE_METHODS))
        self.method, self.adaptive = method, bool(adaptive)
        self.rtol, self.atol, self.dt_min = float(rtol), float(atol), float(dt_min)

    def _planned_nfe(self) -> int | None:
        # torchsde evaluates the drift once before it integrates, to check its shape
        return None if self.adaptive else DRIFTS_PER_STEP.get(self.method, 1) * self.steps + 1

    def _solve(self, score, sde, x, eps, noise):
        span = sde.T - eps
        h = span / self.steps
        batch, numel = x.shape[0], x[0].numel()
        ts = torch.tensor([0.0, span], dtype=torch.float64, device=x.device)
        if self.adaptive:
            entropy = int(torch.randint(0, 2**62, (1,), generator=noise.generator, device=noise.device))
            bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=(batch, numel), dtype=x.dtype,
                                           device=x.device, entropy=entropy,
                                           levy_area_approximation="space-time")
        else:
            bm = FreshBrownian(noise, numel)
        rsde = _ReverseSDE(sde, score, x.shape, SDE_METHODS[self.method], 0.0 if self.adaptive else h)
        options = {"grad_free": True} if self.method == "milstein" else None
        # dt a hair above h: exactly `steps` steps, the last one clipped to end at T - eps.
        with warnings.catch_warnings():
            # torchsde warns that adaptive Euler needs additive noise: ours is additive (g(t) does not
            # depend on x), declared "diagonal" only to avoid a (B, D, D) diffusion matrix.
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")
            ys = torchsde.sdeint(rsde, x.reshape(batch, numel), ts, bm=bm, method=self.method,
                                 dt=h * (1 + 1e-9), adaptive=self.adaptive, rtol=self.rtol, atol=self.atol,
                                 dt_min=self.dt_min, options=options)
        return ys[-1].reshape(x.shape)


class EulerMaruyama(ReverseSDESolver):
    """Euler-Maruyama on the reverse-time SDE (eq. 6), the paper's VP/sub-VP sampler:

        x_{t-h} = x_t - [f(x_t, t) - g(t)^2 score(x_t, t)] h + g(t) sqrt(h) z,

    :class:`ReverseSDESolver` with torchsde's ``method="euler"`` (``adaptive``: with torchsde's
    step-size control). Arguments as :class:`ReverseSDESolver`, less ``method``.
    """

    def __init__(self, steps: int = 1000, adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3,
                 dt_min: float = 1e-5, eps: float | None = None, denoise: bool = True,
                 check_finite: bool = True):
        super().__init__(steps, "euler", adaptive, rtol=rtol, atol=atol, dt_min=dt_min, eps=eps,
                         denoise=denoise, check_finite=check_finite)
