"""DPM-Solver (Lu et al. 2022, noise prediction) and DPM-Solver++ (Lu et al. 2022b, data prediction):
exponential integrators of the probability-flow ODE in the half log-SNR ``lambda = log(m / s)``.

The ODE's linear part is integrated exactly; only the model's prediction is expanded in ``lambda``.
From ``s`` to ``t`` with ``h = lambda_t - lambda_s``:

    noise (DPM-Solver):   x_t = (m_t / m_s) x_s - s_t int_0^h e^u z_hat(lambda_s + u) du,
    data (DPM-Solver++):  x_t = (s_t / s_s) x_s + m_t int_0^h e^{-u} x0(lambda_s + u) du.

The second is the first with ``m <-> s`` and ``lambda <-> -lambda``, so both are written once: with
``(a, b, l) = (m, s, lambda)`` for noise and ``(s, m, -lambda)`` for data, ``M`` the prediction and
``h = l_t - l_s``, a Taylor expansion of ``M`` to order ``k`` gives

    x_t = (a_t / a_s) x_s - b_t [phi_1(h) M_s + phi_2(h) D_1 + phi_3(h) D_2],
    phi_1(h) = e^h - 1,   phi_2(h) = phi_1(h) / h - 1,   phi_3(h) = phi_2(h) / h - 1/2,

with ``D_1 ~ h dM/dl`` and ``D_2 ~ h^2 d^2M/dl^2`` estimated from extra evaluations inside the
step (singlestep, the papers' DPM-Solver-2/3 at ``r = 1/2`` and ``r = 1/3, 2/3``) or from the previous
steps (multistep 2M/3M, Lu et al. 2022b Algorithm 2 and the official code's third-order extension, whose
``D_2`` is half the Taylor estimate: see :meth:`DPMSolver.multistep`). The adaptive
version pairs orders 1-2 or 2-3 on the same evaluations and controls the step with their difference
(Lu et al. 2022, Algorithm 4-5).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..sde import SDE
from .base import Sampler, SamplingError, one_of
from .log_snr import TIME_GRIDS, log_snr, time_at_log_snr, time_steps
from .predictions import data_prediction, noise_prediction

__all__ = ["DPMSolver", "METHODS", "PREDICTIONS", "singlestep_orders"]

METHODS = ("multistep", "singlestep", "adaptive")
PREDICTIONS = ("data", "noise")
#: multistep order -> below this many steps ``lower_order_final`` lowers the order of the last steps. Measured
#: on the 64-d Gaussian-mixture oracle (VP, sub-VP, VE; benchmarks/fast_samplers.py): 2M gains from it up to
#: 14 steps (1-8%); 3M only at 5 steps (0.5-0.7x the error without it), while from 6 to 9 steps it costs
#: 1.1-1.5x (the official code lowers 3M below 10 steps)
LOWER_ORDER_FINAL_BELOW = {1: 0, 2: 15, 3: 6}


def phi_1(h: float) -> float:
    return math.expm1(h)


def phi_2(h: float) -> float:
    return math.expm1(h) / h - 1.0


def phi_3(h: float) -> float:
    return phi_2(h) / h - 0.5


class Node(NamedTuple):
    """A time ``t`` with ``l`` (``lambda`` for noise, ``-lambda`` for data prediction) and the
    coefficients ``a`` (``m`` / ``s``) and ``b`` (``s`` / ``m``) of the update."""

    t: float
    l: float  # noqa: E741 (the papers' lambda)
    a: float
    b: float


def singlestep_orders(steps: int, order: int) -> list[int]:
    """DPM-Solver's order schedule that spends exactly ``steps`` evaluations: as many steps of
    ``order`` as fit, the rest in one or two lower-order steps (Lu et al. 2022, Section 3.4)."""
    k, rest = divmod(steps, order)
    if order == 3:
        return [3] * (k - 1) + [2, 1] if rest == 0 else [3] * k + [rest]
    return [order] * k + ([rest] if rest else [])


class DPMSolver(Sampler):
    """DPM-Solver / DPM-Solver++ with ``steps`` score evaluations (plus one with ``denoise_to_zero``).

    Args:
        steps: score evaluations from ``T`` to ``eps`` (ignored by ``adaptive``, which reports its count).
        order: 1, 2 or 3 (``adaptive``: 2 or 3, the higher of its pair).
        method: ``multistep`` (2M/3M), ``singlestep`` (DPM-Solver-1/2/3 with the papers' order schedule)
            or ``adaptive`` (error-controlled step size).
        prediction: ``data`` (DPM-Solver++) or ``noise`` (DPM-Solver).
        time_grid: ``logsnr`` (uniform in ``lambda``), ``time_uniform`` or ``time_quadratic``.
        lower_order_final: multistep 2M below 15 steps, 3M below 6: the last steps use order
            ``min(order, steps left)`` (more accurate at so few steps, see ``LOWER_ORDER_FINAL_BELOW``).
        denoise_to_zero: finish with one Tweedie denoising step at ``eps`` (the base's ``denoise``).
        rtol, atol: tolerances of ``adaptive`` (Lu et al.: 0.05 and 0.0078 for data in [-1, 1]).
        h_init, theta: initial step in ``lambda`` and safety factor of ``adaptive``.
        eps, check_finite: see :class:`~scoresde.solvers.base.Sampler`.

    ``adaptive`` shares its step sizes across the batch (the worst sample's error decides), like the
    probability-flow ODE: a sample equals its single-sample solve within the tolerances only.
    """

    #: order -> the steps below which ``lower_order_final`` applies (see ``LOWER_ORDER_FINAL_BELOW``)
    lower_order_final_below: dict[int, int] = LOWER_ORDER_FINAL_BELOW

    def __init__(self, steps: int = 20, order: int = 2, method: str = "multistep", prediction: str = "data",
                 time_grid: str = "logsnr", lower_order_final: bool = True, denoise_to_zero: bool = False,
                 rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, theta: float = 0.9,
                 eps: float | None = None, check_finite: bool = True):
        super().__init__(steps, eps=eps, denoise=denoise_to_zero, check_finite=check_finite)
        one_of("DPM-Solver method", method, METHODS)
        one_of("prediction", prediction, PREDICTIONS)
        one_of("time grid", time_grid, TIME_GRIDS)
        if int(order) not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {order}")
        if method == "adaptive":
            if int(order) == 1:
                raise ValueError("the adaptive DPM-Solver pairs orders 1-2 or 2-3: order must be 2 or 3")
            if not (rtol > 0 and atol > 0 and h_init > 0 and 0 < theta <= 1):
                raise ValueError(f"adaptive needs rtol, atol, h_init > 0 and 0 < theta <= 1, got "
                                 f"rtol={rtol}, atol={atol}, h_init={h_init}, theta={theta}")
        elif int(steps) < int(order):
            raise ValueError(f"{method} DPM-Solver-{order} needs steps >= order, got steps={steps}; "
                             f"use more steps or a lower order")
        self.order, self.method, self.prediction = int(order), method, prediction
        self.time_grid, self.lower_order_final = time_grid, bool(lower_order_final)
        self.rtol, self.atol, self.h_init, self.theta = float(rtol), float(atol), float(h_init), float(theta)

    # --- the prediction, at a node -----------------------------------------------------------
    def _node(self, sde: SDE, t: float) -> Node:
        m, s, lam = sde.mean_coef(t), sde.std(t), log_snr(sde, t)
        return Node(t, lam, m, s) if self.prediction == "noise" else Node(t, -lam, s, m)

    def _node_at(self, sde: SDE, l: float) -> Node:  # noqa: E741
        return self._node(sde, time_at_log_snr(sde, l if self.prediction == "noise" else -l))

    def _model(self, score, sde: SDE, x: torch.Tensor, node: Node) -> torch.Tensor:
        predict = noise_prediction if self.prediction == "noise" else data_prediction
        return predict(score, sde, x, node.t)

    # --- the updates ---------------------------------------------------------------------------
    @staticmethod
    def first_order(x, ns: Node, nt: Node, m_s):
        """``x_t = (a_t / a_s) x_s - b_t phi_1(h) M_s`` (DPM-Solver-1 = DDIM)."""
        return x * (nt.a / ns.a) - m_s * (nt.b * phi_1(nt.l - ns.l))

    @staticmethod
    def second_order(x, ns: Node, nt: Node, m_s, m_1, r1: float):
        """``x_t = (a_t / a_s) x_s - b_t phi_1(h) [M_s + (M_{s1} - M_s) / (2 r1)]``, ``M_{s1}`` the
        prediction at ``l_s + r1 h``."""
        return x * (nt.a / ns.a) - (m_s + (m_1 - m_s) / (2.0 * r1)) * (nt.b * phi_1(nt.l - ns.l))

    def singlestep_2(self, model, sde, x, ns: Node, nt: Node, m_s, r1: float = 0.5):
        """DPM-Solver-2: one evaluation at ``s1`` (``l_s + r1 h``), then :meth:`second_order`."""
        n1 = self._node_at(sde, ns.l + r1 * (nt.l - ns.l))
        m_1 = model(self.first_order(x, ns, n1, m_s), n1)
        return self.second_order(x, ns, nt, m_s, m_1, r1)

    def singlestep_3(self, model, sde, x, ns: Node, nt: Node, m_s, r1: float = 1 / 3, r2: float = 2 / 3):
        """DPM-Solver-3 (Lu et al. 2022, Algorithm 2); also returns the second-order solution from
        the same evaluations (the lower one of the adaptive 2-3 pair)."""
        h = nt.l - ns.l
        n1, n2 = self._node_at(sde, ns.l + r1 * h), self._node_at(sde, ns.l + r2 * h)
        d_1 = model(self.first_order(x, ns, n1, m_s), n1) - m_s
        u_2 = x * (n2.a / ns.a) - (m_s * phi_1(r2 * h) + d_1 * (r2 / r1 * phi_2(r2 * h))) * n2.b
        d_2 = model(u_2, n2) - m_s
        x_t = x * (nt.a / ns.a) - (m_s * phi_1(h) + d_2 * (phi_2(h) / r2)) * nt.b
        return x_t, self.second_order(x, ns, nt, m_s, m_s + d_1, r1)

    @staticmethod
    def multistep(x, history, nt: Node, order: int):
        """Multistep update of ``order`` from the last ``order`` (node, prediction) pairs, newest last,
        with ``r_k = h_k / h`` and the divided differences ``D1_0 = (M_0 - M_1) / r0``,
        ``D1_1 = (M_1 - M_2) / r1``.

        Order 3: ``D_1 = D1_0 + r0 (D1_0 - D1_1) / (r0 + r1)`` is ``h M'`` to ``O(h^3)``, and
        ``D1_0 - D1_1 = (r0 + r1) h^2 M'' / 2 + O(h^3)``, so Taylor's third-order term ``phi_3(h) h^2 M''``
        takes ``D_2 = 2 (D1_0 - D1_1) / (r0 + r1)`` (exact integration of the quadratic through the three
        predictions, global order 3). The update takes the official code's ``D_2 = (D1_0 - D1_1) /
        (r0 + r1)``, half of it (global order 2: measured 2.2-2.4 from 80 to 640 steps), because it is the
        more accurate one at the budgets these solvers are for: against the float64 probability flow at
        ``eps`` on the 64-d Gaussian-mixture oracle, Taylor's term (with the same order schedule) had
        1.03-1.20x this error from 5 to 30 evaluations on VP and VE and 1.09-1.17x on sub-VP except
        0.89-0.98x at 10-12; 0.95-1.05x at 50. On the 2-d oracle of the tests 1.0-2.9x at 10 and 20
        evaluations; on the main job's digits model (1,000 steps, float64) 1.14-1.54x at 5-20 and 1.04x
        at 50 (benchmarks/results/fast_samplers_accuracy). Scaling the
        term by any ``w`` in ``[0.4, 0.6]``, or by ``1 / (1 + |h|)`` (order 3 again), changed the 64-d errors
        by less than 5% either way."""
        (n0, m0) = history[-1]
        h = nt.l - n0.l
        if order == 1:
            return DPMSolver.first_order(x, n0, nt, m0)
        n1, m1 = history[-2]
        r0 = (n0.l - n1.l) / h
        d1_0 = (m0 - m1) / r0
        if order == 2:
            return x * (nt.a / n0.a) - (m0 + 0.5 * d1_0) * (nt.b * phi_1(h))
        n2, m2 = history[-3]
        r1 = (n1.l - n2.l) / h
        d1_1 = (m1 - m2) / r1
        d_1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
        d_2 = (d1_0 - d1_1) / (r0 + r1)
        return x * (nt.a / n0.a) - (m0 * phi_1(h) + d_1 * phi_2(h) + d_2 * phi_3(h)) * nt.b

    # --- sampling ------------------------------------------------------------------------------
    def _planned_nfe(self) -> int | None:
        return None if self.method == "adaptive" else self.steps

    def _solve(self, score, sde, x, eps, noise):
        def model(y, node):
            return self._model(score, sde, y, node)

        run = {"multistep": self._multistep, "singlestep": self._singlestep, "adaptive": self._adaptive}
        return run[self.method](model, score, sde, x, eps)

    def _multistep(self, model, counter, sde, x, eps):
        """2M/3M on ``steps`` intervals, one evaluation each. The order rises by one per step from 1 (one
        prediction more each step); with ``lower_order_final`` below ``LOWER_ORDER_FINAL_BELOW`` steps the
        last steps use order ``min(order, steps left)``."""
        nodes = [self._node(sde, t) for t in time_steps(sde, self.time_grid, self.steps, sde.T, eps)]
        history = [(nodes[0], model(x, nodes[0]))]
        for i in range(1, self.steps + 1):
            counter.step = i
            order = min(self.order, i)  # warm-up: fewer predictions to use
            if self.lower_order_final and self.steps < self.lower_order_final_below[self.order]:
                order = min(order, self.steps + 1 - i)
            x = self.multistep(x, history, nodes[i], order)
            if i < self.steps:
                history = history[-2:] + [(nodes[i], model(x, nodes[i]))]
        return x

    def _singlestep(self, model, counter, sde, x, eps):
        orders = singlestep_orders(self.steps, self.order)
        if self.time_grid == "logsnr":
            times = time_steps(sde, "logsnr", len(orders), sde.T, eps)
        else:  # the outer steps on the fine grid of `steps` intervals
            fine = time_steps(sde, self.time_grid, self.steps, sde.T, eps)
            times = [fine[sum(orders[:i])] for i in range(len(orders) + 1)]
        nodes = [self._node(sde, t) for t in times]
        for i, order in enumerate(orders):
            counter.step = i
            ns, nt = nodes[i], nodes[i + 1]
            m_s = model(x, ns)
            if order == 1:
                x = self.first_order(x, ns, nt, m_s)
            elif order == 2:
                x = self.singlestep_2(model, sde, x, ns, nt, m_s)
            else:
                x, _ = self.singlestep_3(model, sde, x, ns, nt, m_s)
        return x

    def _adaptive(self, model, counter, sde, x, eps, max_attempts: int = 10_000):
        """Lu et al. (2022) Algorithm 4-5: the step in ``lambda`` is accepted when the scaled RMS
        difference ``E`` of the pair's solutions is <= 1 (``delta = max(atol, rtol max(|x_lower|,
        |x_prev|))``), and the next is ``min(theta h E^(-1/order), lambda_eps - lambda_s)``. A rejected
        step reuses the prediction at ``s``."""
        lam_s, lam_end = log_snr(sde, sde.T), log_snr(sde, eps)
        ns, m_s, x_prev, h = self._node(sde, sde.T), None, x, self.h_init
        for attempt in range(max_attempts):
            if lam_s >= lam_end:
                return x
            counter.step = attempt
            lam_t = lam_s + h
            if lam_t >= lam_end - 1e-12:  # the last step lands on eps exactly
                lam_t, nt = lam_end, self._node(sde, eps)
            else:
                nt = self._node(sde, time_at_log_snr(sde, lam_t))
            if m_s is None:
                m_s = model(x, ns)
            if self.order == 2:
                x_lower = self.first_order(x, ns, nt, m_s)
                x_higher = self.singlestep_2(model, sde, x, ns, nt, m_s)
            else:
                x_higher, x_lower = self.singlestep_3(model, sde, x, ns, nt, m_s)
            delta = torch.maximum(x_lower.abs(), x_prev.abs()).mul_(self.rtol).clamp_(min=self.atol)
            err = ((x_higher - x_lower) / delta).reshape(x.shape[0], -1).pow(2).mean(1).sqrt().max()
            err = float(err)
            if not math.isfinite(err):
                raise SamplingError(f"adaptive DPM-Solver: the error estimate is NaN/inf at t = {ns.t:.6g}")
            if err <= 1.0:
                x, x_prev, ns, lam_s, m_s = x_higher, x_lower, nt, lam_t, None
            factor = math.inf if err == 0.0 else self.theta * err ** (-1.0 / self.order)
            h = min(h * factor, lam_end - lam_s)
        raise SamplingError(f"adaptive DPM-Solver did not reach t = {eps:.3g} in {max_attempts} attempts "
                            f"(at t = {ns.t:.6g}); loosen rtol/atol or check the model")
