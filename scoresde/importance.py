"""Importance sampling of the training time for the likelihood weighting (Song, Durkan, Murray & Ermon 2021).

With ``lambda(t) = g(t)^2`` the DSM loss at time ``t`` is ``g(t)^2 / s(t)^2 * || s(t) score + z ||^2``: its
weight ``g^2 / s^2`` spans orders of magnitude on ``[eps, T]`` (``~ 1 / t`` near 0 for VP), so a uniform ``t``
gives a high-variance estimate. Drawing ``t`` from

    q(t) = g(t)^2 / (s(t)^2 Z),   Z = int_eps^T g(t)^2 / s(t)^2 dt,

and weighting each term by ``1 / ((T - eps) q(t))`` keeps the estimate unbiased for the uniform-time
objective ``E_{t ~ U(eps, T)}[...]`` while cancelling the weight (it becomes the constant ``Z / (T - eps)``).

``t`` is drawn by inverting the CDF ``F(t) = (Lambda(t) - Lambda(eps)) / Z`` with ``Lambda' = g^2 / s^2``.
For every SDE of the affine family ``Lambda = -2 lambda`` (plus a constant), ``lambda = log m - log s`` the
half log-SNR: ``d lambda / dt = a - (2 a s^2 + g^2) / (2 s^2) = -g^2 / (2 s^2)``. So

    F(t) = 2 (lambda(eps) - lambda(t)) / Z,   Z = 2 (lambda(eps) - lambda(T)),
    F^-1(u) = t(lambda(eps) - u Z / 2),

with the SDE's own :meth:`~scoresde.sde.SDE.log_snr` and its inverse
:meth:`~scoresde.sde.SDE.time_at_log_snr` (closed forms for VP, sub-VP and VE, a float64 bisection for any
other schedule): exact for every SDE, no table. (For VP ``Lambda = log(e^B - 1)``, ``B = int_0^t beta``; for
VE ``q`` is uniform.) All coefficients are computed in float64.
"""

from __future__ import annotations

import math
import weakref

import torch

from .sde import SDE

__all__ = ["LikelihoodImportance", "likelihood_importance"]


class LikelihoodImportance:
    """The density ``q(t) = g(t)^2 / (s(t)^2 Z)`` on ``[eps, T]`` of one SDE (see the module docstring).

    Args:
        sde: the forward SDE.
        eps: the smallest time.
    """

    def __init__(self, sde: SDE, eps: float):
        if not 0.0 < eps < sde.T:
            raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
        self.sde, self.eps, self.T = sde, float(eps), float(sde.T)
        self._lam_eps = float(sde.log_snr(self.eps))
        self.normalizer = 2.0 * (self._lam_eps - float(sde.log_snr(self.T)))
        if not (math.isfinite(self.normalizer) and self.normalizer > 0):
            raise ValueError(f"int g^2/s^2 dt over [{eps}, {sde.T}] is {self.normalizer} for {sde!r}")

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        """``F(t) = int_eps^t q = 2 (lambda(eps) - lambda(t)) / Z`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return 2.0 * (self._lam_eps - self.sde.log_snr(t)) / self.normalizer

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        """``F^-1(u)`` for ``u`` in ``[0, 1]``: a draw of ``q`` from ``u ~ U[0, 1)``, in ``u``'s dtype."""
        u64 = torch.as_tensor(u).to(torch.float64)
        t = self.sde.time_at_log_snr(self._lam_eps - 0.5 * self.normalizer * u64)
        return t.clamp(self.eps, self.T).to(u.dtype if torch.is_tensor(u) else torch.float64)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """``q(t) = g(t)^2 / (s(t)^2 Z)``."""
        t64 = torch.as_tensor(t).to(torch.float64)
        q = (self.sde.diffusion(t64) / self.sde.std(t64)) ** 2 / self.normalizer
        return q.to(t.dtype) if torch.is_tensor(t) else q

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """``1 / ((T - eps) q(t))``: the factor that keeps an average over ``t ~ q`` unbiased for the
        average over ``t ~ U(eps, T)``."""
        return 1.0 / ((self.T - self.eps) * self.density(t))


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def likelihood_importance(sde: SDE, eps: float) -> LikelihoodImportance:
    """:class:`LikelihoodImportance` of ``(sde, eps)``, built once per SDE object and ``eps``."""
    per_sde = _TABLES.setdefault(sde, {})
    if eps not in per_sde:
        per_sde[eps] = LikelihoodImportance(sde, eps)
    return per_sde[eps]
