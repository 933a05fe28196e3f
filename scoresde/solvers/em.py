"""The reverse-time SDE (Song et al. eq. 6) integrated by ``torchsde.sdeint``.

    dx = [f(x, t) - g(t)^2 grad log p_t(x)] dt + g(t) dw_bar,   t from T down to eps.

torchsde integrates forward in time on 2-D states, so we integrate in ``s = T - t`` on the
flattened data: ``dx = -[f - g^2 score](x, T - s) ds + g(T - s) dW_s``. The noise does not depend on
``x`` (additive), so Ito and Stratonovich coincide and torchsde's Stratonovich methods (``heun``,
``midpoint``, ``euler_heun``) are as valid as the Ito ones (``euler``, ``milstein``, ``srk``).
(``reversible_heun`` is left out: its small stability region diverges on the stiff score near
``t = 0`` at practical step counts.)

Brownian motion: fixed-step methods ask for each increment exactly once, so a source that draws
fresh Gaussian increments from the sample's generator (per-sample seeds stay exact) replaces
torchsde's ``BrownianInterval``, which costs ~10x a small model's step. Adaptive stepping revisits
intervals, so it keeps ``BrownianInterval``. For ``euler`` the diffusion ``g(t)`` is constant over a
step, so the source draws the whole noise term ``g(t) dW ~ N(0, g(t)^2 h)`` in one kernel and
``g_prod`` passes it through (the other methods get plain increments and multiply by ``g``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torchsde
from torchsde._brownian.brownian_base import BaseBrownian
from tqdm.auto import tqdm

from ..score import ScoreFn
from ..sde import SDE
from .base import CountingScore, NoiseSource, Sampler

__all__ = ["EulerMaruyama", "SDE_METHODS"]

#: torchsde method -> the SDE type we declare for it (equivalent for additive noise)
SDE_METHODS = {
    "euler": "ito", "milstein": "ito", "srk": "ito",
    "heun": "stratonovich", "midpoint": "stratonovich", "euler_heun": "stratonovich",
}


class _FreshBrownian(BaseBrownian):
    """Brownian increments ``W(tb) - W(ta) = sqrt(tb - ta) z`` with ``z`` fresh from a
    :class:`NoiseSource`; with ``return_U`` also the space-time Levy area term
    ``U = h (W / 2 + H)``, ``H ~ N(0, h / 12)`` independent of ``W`` (torchsde's convention)."""

    def __init__(self, noise: NoiseSource, numel: int, bar=None, diffusion=None):
        self._noise = noise
        self._shape = (noise.batch, numel)
        self._bar = bar
        self._diffusion = diffusion  # s -> g(T - s): return g dW instead of dW (Euler only)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A:
            raise ValueError("Levy area A is not available from the fresh-increment Brownian source")
        ta = float(ta)
        h = float(tb) - ta
        scale = math.sqrt(h) if self._diffusion is None else self._diffusion(ta) * math.sqrt(h)
        w = self._noise(scale).view(self._shape)
        if self._bar is not None:
            self._bar.update(1)
        if not return_U:
            return w
        big_h = self._noise(math.sqrt(h / 12.0)).view(self._shape)
        return w, h * (0.5 * w + big_h)

    def __repr__(self):
        return f"_FreshBrownian(shape={self._shape})"

    @property
    def dtype(self):
        return self._noise.dtype

    @property
    def device(self):
        return self._noise.device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return "space-time"


class _ReverseSDE(torch.nn.Module):
    """The reverse-time SDE in forward time ``s = T - t`` on flattened states, for torchsde."""

    noise_type = "diagonal"

    def __init__(self, sde: SDE, score: CountingScore, shape, sde_type: str, step_size: float,
                 prescaled_noise: bool = False):
        super().__init__()
        self.sde, self.score, self.shape, self.sde_type = sde, score, tuple(shape), sde_type
        self.step_size = step_size
        self.prescaled_noise = prescaled_noise  # the Brownian source already returns g dW
        self.flat = len(self.shape) == 2  # (B, D) data: torchsde's state needs no reshaping
        self._memo = [None, None, None]  # a list, mutated in place: no nn.Module.__setattr__ per step

    def diffusion_at(self, s: float) -> float:
        """``g(T - s)``."""
        return self.sde.diffusion(self.sde.T - s)

    def f(self, s, y):
        """``-[f - g^2 score](x, T - s)``: the reverse drift in forward time ``s``."""
        s = float(s)
        # torchsde evaluates f once at (ts[0], y0) to check shapes, then again in the first step:
        # memoise on the identity of y so that costs one score evaluation, not two.
        memo = self._memo
        if memo[0] is y and memo[1] == s:
            return memo[2]
        sde = self.sde
        t = sde.T - s
        self.score.step = round(s / self.step_size) if self.step_size else s
        flat = self.flat
        score = self.score(y if flat else y.view(self.shape),
                           torch.full((y.shape[0],), t, device=y.device, dtype=y.dtype))
        # -(a x - g^2 score): two ops, one when there is no drift (VE)
        a, g2 = sde.drift_coef(t), sde.diffusion(t) ** 2
        score = score if flat else score.view(y.shape)
        out = torch.add(y * -a, score, alpha=g2) if a else score * g2
        memo[:] = (y, s, out)
        return out

    def g(self, s, y):
        return torch.full_like(y, self.diffusion_at(float(s)))

    def g_prod(self, s, y, v):
        return v if self.prescaled_noise else v * self.diffusion_at(float(s))

    def f_and_g_prod(self, s, y, v):
        return self.f(s, y), self.g_prod(s, y, v)


class EulerMaruyama(Sampler):
    """Reverse-time SDE sampler through ``torchsde.sdeint``.

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
        super().__init__(eps=eps, denoise=denoise, check_finite=check_finite)
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if method not in SDE_METHODS:
            raise ValueError(f"unknown torchsde method {method!r}; valid: {', '.join(sorted(SDE_METHODS))}")
        self.steps, self.method, self.adaptive = int(steps), method, bool(adaptive)
        self.rtol, self.atol, self.dt_min = float(rtol), float(atol), float(dt_min)

    @torch.no_grad()
    def sample(self, score_fn: ScoreFn, sde: SDE, shape, *, generator: torch.Generator | None = None,
               seeds: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = False, device=None, dtype=torch.float32) -> torch.Tensor:
        counter, noise, x = self._start(score_fn, sde, shape, generator, seeds, x_T, device, dtype)
        eps = self._eps(sde)
        span = sde.T - eps
        h = span / self.steps
        batch, numel = x.shape[0], x[0].numel()
        ts = torch.tensor([0.0, span], dtype=torch.float64, device=x.device)
        bar = tqdm(total=self.steps, desc=f"sde {self.method}", disable=not progress, leave=False)
        if self.adaptive:
            entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=noise.device))
            bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=(batch, numel), dtype=x.dtype,
                                           device=x.device, entropy=entropy,
                                           levy_area_approximation="space-time")
        prescaled = not self.adaptive and self.method == "euler"
        rsde = _ReverseSDE(sde, counter, x.shape, SDE_METHODS[self.method], 0.0 if self.adaptive else h,
                           prescaled_noise=prescaled)
        if not self.adaptive:
            bm = _FreshBrownian(noise, numel, bar, rsde.diffusion_at if prescaled else None)
        options = {"grad_free": True} if self.method == "milstein" else None
        # dt a hair above h: exactly `steps` steps, the last one clipped to end at T - eps.
        with warnings.catch_warnings():
            # torchsde warns that adaptive Euler needs additive noise: ours is additive (g(t) does not
            # depend on x), declared "diagonal" only to avoid a (B, D, D) diffusion matrix.
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")
            ys = torchsde.sdeint(rsde, x.reshape(batch, numel), ts, bm=bm, method=self.method,
                                 dt=h * (1 + 1e-9), adaptive=self.adaptive, rtol=self.rtol, atol=self.atol,
                                 dt_min=self.dt_min, options=options)
        bar.close()
        return self._finish(counter, sde, ys[-1].reshape(x.shape), eps)
