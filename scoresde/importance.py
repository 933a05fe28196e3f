"""Importance sampling of the training time for the likelihood weighting (Song, Durkan, Murray & Ermon 2021).

With ``lambda(t) = g(t)^2`` the DSM loss at time ``t`` is ``g(t)^2 / s(t)^2 * || s(t) score + z ||^2``: its
weight ``g^2 / s^2`` spans orders of magnitude on ``[eps, T]`` (``~ 1 / t`` near 0 for VP), so a uniform ``t``
gives a high-variance estimate. Drawing ``t`` from

    q(t) = g(t)^2 / (s(t)^2 Z),   Z = int_eps^T g(t)^2 / s(t)^2 dt,

and weighting each term by ``1 / ((T - eps) q(t))`` keeps the estimate unbiased for the uniform-time
objective ``E_{t ~ U(eps, T)}[...]`` while cancelling the weight (it becomes the constant ``Z / (T - eps)``).

``t`` is drawn by inverting the CDF ``F(t) = (Lambda(t) - Lambda(eps)) / Z`` with ``Lambda' = g^2 / s^2``:

* VP, ``B(t) = int_0^t beta``: ``g^2 / s^2 = beta / (1 - e^-B)``, ``Lambda = log(e^B - 1)``;
  inverse ``B = log(1 + e^Lambda)``, then ``t`` from the quadratic ``B(t)``;
* sub-VP: ``g^2 / s^2 = beta (e^B + 1) / (e^B - 1)``, ``Lambda = 2 log(e^B - 1) - B``; inverse
  ``e^B = 1 + e^Lambda / 2 + sqrt(e^Lambda + e^(2 Lambda) / 4)``;
* VE: ``g^2 / s^2 = 2 log(sigma_max / sigma_min)`` is constant, ``q`` is uniform;
* any other SDE: ``Lambda`` tabulated once (trapezoid rule on a grid dense near ``eps``), ``t`` by linear
  interpolation; the weight then uses the tabulated (piecewise-constant) density actually sampled, so the
  estimate stays exactly unbiased.

All coefficients are computed in float64.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch

from .sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = ["LikelihoodImportance", "likelihood_importance"]


def _integrated_beta(sde, t: torch.Tensor) -> torch.Tensor:
    """``B(t) = int_0^t beta = b0 t + (b1 - b0) t^2 / 2``."""
    return sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2


def _time_of_integrated_beta(sde, b: torch.Tensor) -> torch.Tensor:
    """The root ``t >= 0`` of ``B(t) = b``, cancellation-free: ``2 b / (b0 + sqrt(b0^2 + 2 (b1 - b0) b))``."""
    return 2.0 * b / (sde.beta_min + torch.sqrt(sde.beta_min**2 + 2.0 * (sde.beta_max - sde.beta_min) * b))


def _vp_lambda(sde, t):
    return torch.log(torch.expm1(_integrated_beta(sde, t)))


def _vp_inverse(sde, lam):
    return _time_of_integrated_beta(sde, torch.nn.functional.softplus(lam))


def _subvp_lambda(sde, t):
    b = _integrated_beta(sde, t)
    return 2.0 * torch.log(torch.expm1(b)) - b


def _subvp_inverse(sde, lam):
    e = torch.exp(lam)
    return _time_of_integrated_beta(sde, torch.log1p(0.5 * e + torch.sqrt(e + 0.25 * e**2)))


def _ve_lambda(sde, t):
    return 2.0 * sde.log_ratio * t


def _ve_inverse(sde, lam):
    return lam / (2.0 * sde.log_ratio)


#: exact SDE class -> (Lambda, its inverse); a subclass (another schedule) falls back to the table
CLOSED_FORMS = {
    VPSDE: (_vp_lambda, _vp_inverse),
    SubVPSDE: (_subvp_lambda, _subvp_inverse),
    VESDE: (_ve_lambda, _ve_inverse),
}


class LikelihoodImportance:
    """The density ``q(t) = g(t)^2 / (s(t)^2 Z)`` on ``[eps, T]`` of one SDE (see the module docstring).

    Args:
        sde: the forward SDE.
        eps: the smallest time.
        table_size: grid points of the tabulated CDF (SDEs without a closed form only).
    """

    def __init__(self, sde: SDE, eps: float, table_size: int = 4097):
        if not 0.0 < eps < sde.T:
            raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
        self.sde, self.eps, self.T = sde, float(eps), float(sde.T)
        self.closed_form = CLOSED_FORMS.get(type(sde))
        if self.closed_form is not None:
            lam, _ = self.closed_form
            ends = lam(sde, torch.tensor([self.eps, self.T], dtype=torch.float64))
            self._lam_eps, self.normalizer = float(ends[0]), float(ends[1] - ends[0])
        else:
            grid = np.unique(np.concatenate([np.geomspace(self.eps, self.T, table_size),
                                             np.linspace(self.eps, self.T, table_size)]))
            tg = torch.from_numpy(grid)
            rate = (sde.diffusion(tg) / sde.std(tg)) ** 2
            cum = torch.cat([torch.zeros(1, dtype=torch.float64),
                             torch.cumsum(0.5 * (rate[1:] + rate[:-1]) * torch.diff(tg), 0)])
            self._grid, self._cum = tg, cum
            self.normalizer = float(cum[-1])
        if not (math.isfinite(self.normalizer) and self.normalizer > 0):
            raise ValueError(f"int g^2/s^2 dt over [{eps}, {sde.T}] is {self.normalizer} for {sde!r}")

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        """``F(t) = int_eps^t q`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.closed_form is not None:
            return (self.closed_form[0](self.sde, t) - self._lam_eps) / self.normalizer
        return torch.from_numpy(np.interp(t.cpu().numpy(), self._grid.numpy(), self._cum.numpy())).to(
            t.device) / self.normalizer

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        """``F^-1(u)`` for ``u`` in ``[0, 1]``: a draw of ``q`` from ``u ~ U[0, 1)``, in ``u``'s dtype."""
        u64 = torch.as_tensor(u).to(torch.float64)
        if self.closed_form is not None:
            t = self.closed_form[1](self.sde, self._lam_eps + u64 * self.normalizer)
        else:
            t = torch.from_numpy(np.interp((u64 * self.normalizer).cpu().numpy(), self._cum.numpy(),
                                           self._grid.numpy())).to(u64.device)
        return t.clamp(self.eps, self.T).to(u.dtype if torch.is_tensor(u) else torch.float64)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """``q(t)`` (for a table: the piecewise-constant density its interpolated inverse samples)."""
        t64 = torch.as_tensor(t).to(torch.float64)
        if self.closed_form is not None:
            q = (self.sde.diffusion(t64) / self.sde.std(t64)) ** 2 / self.normalizer
        else:
            grid, cum = self._grid.to(t64.device), self._cum.to(t64.device)
            i = torch.searchsorted(grid, t64, right=True).clamp(1, grid.numel() - 1)
            q = (cum[i] - cum[i - 1]) / (grid[i] - grid[i - 1]) / self.normalizer
        return q.to(t.dtype) if torch.is_tensor(t) else q

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """``1 / ((T - eps) q(t))``: the factor that keeps an average over ``t ~ q`` unbiased for the
        average over ``t ~ U(eps, T)``."""
        return 1.0 / ((self.T - self.eps) * self.density(t))


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def likelihood_importance(sde: SDE, eps: float) -> LikelihoodImportance:
    """:class:`LikelihoodImportance` of ``(sde, eps)``, built once per SDE object and ``eps`` (a table
    costs a few milliseconds; the closed forms nothing)."""
    per_sde = _TABLES.setdefault(sde, {})
    if eps not in per_sde:
        per_sde[eps] = LikelihoodImportance(sde, eps)
    return per_sde[eps]
