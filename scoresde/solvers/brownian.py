"""A Brownian motion for ``torchsde.sdeint`` that draws each increment fresh from a :class:`NoiseSource`.

Fixed-step methods ask for each increment ``W(tb) - W(ta)`` exactly once, so fresh Gaussian draws
are exact, and drawing them from the sample's own generator keeps per-sample seeds exact. It
replaces torchsde's ``BrownianInterval``, which costs ~10x a small model's step (measured,
benchmarks/bench_solvers.py). Adaptive stepping revisits intervals and keeps ``BrownianInterval``.

It subclasses torchsde's ``BaseBrownian``, which torchsde does not export (a private module):
tested with the torchsde versions in ``TESTED_TORCHSDE``; tests/test_solvers.py checks the installed
version against that range and that the class still has every abstract method of the base.
"""

from __future__ import annotations

import math

from torchsde._brownian.brownian_base import BaseBrownian

from .base import NoiseSource

__all__ = ["FreshBrownian", "TESTED_TORCHSDE"]

#: torchsde versions this module was tested with: [lowest, first untested)
TESTED_TORCHSDE = ("0.2.6", "0.3")


class FreshBrownian(BaseBrownian):
    """Brownian increments ``W(tb) - W(ta) = sqrt(tb - ta) z`` with ``z`` fresh from ``noise``
    (states flattened to ``(B, numel)``); with ``return_U`` also the space-time Levy area term
    ``U = h (W / 2 + H)``, ``H ~ N(0, h / 12)`` independent of ``W`` (torchsde's convention)."""

    def __init__(self, noise: NoiseSource, numel: int):
        self._noise = noise
        self._shape = (noise.batch, numel)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A:
            raise ValueError("Levy area A is not available from the fresh-increment Brownian source")
        h = float(tb) - float(ta)
        w = math.sqrt(h) * self._noise().view(self._shape)
        if not return_U:
            return w
        big_h = math.sqrt(h / 12.0) * self._noise().view(self._shape)
        return w, h * (0.5 * w + big_h)

    def __repr__(self):
        return f"FreshBrownian(shape={self._shape})"

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
