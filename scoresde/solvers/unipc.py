"""UniPC (Zhao, Bai, Rao, Zhou & Lu, NeurIPS 2023): a unified predictor-corrector of the probability-flow
ODE, data prediction, in the half log-SNR ``lambda`` (notation of :mod:`.dpm_solver`: ``l = -lambda``,
``a = s``, ``b = m``, ``M`` the data prediction ``x0``, ``h = l_t - l_0``).

From the newest node ``0`` to ``t``, with differences ``D_k = (M_k - M_0) / r_k`` of earlier (or later)
predictions at ``l_k = l_0 + r_k h``, one update serves both halves:

    x_t = (a_t / a_0) x_0 - b_t [phi_1(h) M_0 + B(h) sum_k rho_k D_k],   B(h) = e^h - 1 ("bh2"; "bh1": h),

where the ``rho_k`` meet the order conditions ``sum_k rho_k r_k^(i-1) = i! phi_{i+1}(h) / B(h)``, ``i = 1..n``
(``phi_{k+1}(h) = phi_k(h) / h - 1/k!``, ``phi_1(h) = e^h - 1``; the paper's eq. 9-11, Algorithms 1-2):

* the predictor UniP-p takes the ``p - 1`` previous differences (p = 1: DDIM; p = 2: ``rho = 1/2``, the
  paper's choice for bh2; p = 3: the 2 x 2 system);
* the corrector UniC-p adds the difference to the prediction at the predicted ``x_t`` (``r = 1``; p = 1:
  ``rho = 1/2``, else the p x p system) and raises the order by one (UniPC-p is of order p + 1).

The prediction at the predicted ``x_t`` is the one the next step starts from, so the corrector costs no
evaluation: ``steps`` evaluations in all (the last step is not corrected). The order rises from 1 over the
first steps (one more prediction each) and, with ``lower_order_final`` at few steps, falls to 1 over the last
ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..sde import SDE
from .base import Sampler, one_of
from .dpm_solver import LOWER_ORDER_FINAL_BELOW, Node, phi_1
from .log_snr import TIME_GRIDS, log_snr, time_steps
from .predictions import data_prediction

__all__ = ["UniPC", "VARIANTS", "unipc_coefficients"]

#: ``B(h)`` of the update: ``bh1`` ``h``, ``bh2`` ``e^h - 1``
VARIANTS = ("bh1", "bh2")


def unipc_coefficients(h: float, rks: list[float], variant: str = "bh2") -> np.ndarray:
    """``rho`` solving ``sum_k rho_k r_k^(i-1) = i! phi_{i+1}(h) / B(h)`` for ``i = 1..len(rks)``."""
    b_h = math.expm1(h) if variant == "bh2" else h
    phi, fact, rhs = phi_1(h), 1.0, []
    for i in range(1, len(rks) + 1):
        fact *= i
        phi = phi / h - 1.0 / fact  # phi_{i+1}(h) = phi_i(h) / h - 1 / i!
        rhs.append(phi * fact / b_h)
    vander = np.vander(np.asarray(rks, dtype=np.float64), len(rks), increasing=True).T  # rows r^(i-1)
    return np.linalg.solve(vander, np.asarray(rhs))


class UniPC(Sampler):
    """UniPC-p with ``steps`` score evaluations (plus one with ``denoise_to_zero``), data prediction.

    Measured (RMS at ``eps`` against the float64 probability flow; benchmarks/fast_samplers.py): on the main
    job's digits model (1,000 training steps, float64) UniPC-2 at 10 evaluations has 0.80x the error of the
    best of the official DPM-Solver++(2M/3M) and k-diffusion's 2M/3M (5.9e-2 against k-diffusion's 3M 7.4e-2),
    UniPC-3 0.93x there and the least error from 15 evaluations on (0.66-0.76x at 15-20). Hence the default
    ``order=2`` for the default 10 steps; ``order=3`` from about 15.

    Args:
        steps: score evaluations from ``T`` to ``eps`` (>= ``order``).
        order: ``p`` = 1, 2 or 3 of the predictor and corrector (UniPC-p, of order p + 1).
        variant: ``bh2`` (``B(h) = e^h - 1``, the paper's choice for unconditional sampling) or ``bh1``
            (``B(h) = h``).
        time_grid: ``logsnr`` (uniform in ``lambda``), ``time_uniform`` or ``time_quadratic``.
        lower_order_final: below ``LOWER_ORDER_FINAL_BELOW[order]`` steps (DPM-Solver's: 15 for order 2,
            6 for order 3) the last steps use order ``min(order, steps left)``. Measured on the 64-d oracle
            as for DPM-Solver: UniPC-2 gains up to 13% from it below 15 steps; UniPC-3 gains at 5 steps
            (0.4-0.8x the error without it) and mostly loses at 6-12 (0.9-1.8x).
        denoise_to_zero: finish with one Tweedie denoising step at ``eps`` (the base's ``denoise``).
        eps, check_finite: see :class:`~scoresde.solvers.base.Sampler`.
    """

    def __init__(self, steps: int = 10, order: int = 2, variant: str = "bh2", time_grid: str = "logsnr",
                 lower_order_final: bool = True, denoise_to_zero: bool = False, eps: float | None = None,
                 check_finite: bool = True):
        super().__init__(steps, eps=eps, denoise=denoise_to_zero, check_finite=check_finite)
        one_of("UniPC variant", variant, VARIANTS)
        one_of("time grid", time_grid, TIME_GRIDS)
        if int(order) not in (1, 2, 3):
            raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
        if int(steps) < int(order):
            raise ValueError(f"UniPC-{order} needs steps >= order, got steps={steps}; use more steps or a "
                             f"lower order")
        self.order, self.variant, self.time_grid = int(order), variant, time_grid
        self.lower_order_final = bool(lower_order_final)

    @staticmethod
    def _node(sde: SDE, t: float) -> Node:
        return Node(t, -log_snr(sde, t), sde.std(t), sde.mean_coef(t))

    def update(self, x, history, nt: Node, order: int, m_t: torch.Tensor | None = None) -> torch.Tensor:
        """UniP-``order`` from the last ``order`` (node, prediction) pairs of ``history`` (newest last), or,
        given ``m_t`` (the prediction at the predicted ``x_t``), UniC-``order``."""
        n0, m0 = history[-1]
        h = nt.l - n0.l
        rks = [(n.l - n0.l) / h for n, _ in history[-order:-1][::-1]]  # the previous nodes, newest first
        ds = [(m - m0) / r for r, (_, m) in zip(rks, history[-order:-1][::-1])]
        if m_t is not None:
            rks, ds = rks + [1.0], ds + [m_t - m0]
        if not ds:
            rhos = []
        elif len(ds) == 1 and self.variant == "bh2":
            rhos = [0.5]  # the paper's bh2 choice (the 1 x 1 system's value tends to 1/2 as h -> 0)
        else:
            rhos = unipc_coefficients(h, rks, self.variant).tolist()
        b_h = phi_1(h) if self.variant == "bh2" else h
        correction = sum(rho * d for rho, d in zip(rhos, ds))
        return x * (nt.a / n0.a) - (m0 * phi_1(h) + correction * b_h) * nt.b

    def _planned_nfe(self) -> int:
        return self.steps

    def _solve(self, score, sde, x, eps, noise):
        nodes = [self._node(sde, t) for t in time_steps(sde, self.time_grid, self.steps, sde.T, eps)]
        history = [(nodes[0], data_prediction(score, sde, x, nodes[0].t))]
        for i in range(1, self.steps + 1):
            score.step = i
            order = min(self.order, i)  # warm-up: one more prediction each step
            if self.lower_order_final and self.steps < LOWER_ORDER_FINAL_BELOW[self.order]:
                order = min(order, self.steps + 1 - i)
            x_t = self.update(x, history, nodes[i], order)
            if i == self.steps:  # the last step: no corrector (it would cost an evaluation)
                return x_t
            m_t = data_prediction(score, sde, x_t, nodes[i].t)
            x = self.update(x, history, nodes[i], order, m_t)
            history = history[-(self.order - 1):] + [(nodes[i], m_t)] if self.order > 1 else [(nodes[i], m_t)]
        return x
