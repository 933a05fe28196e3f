"""Continuous-time denoising score matching (Song et al. 2021, eq. 7).

For ``x_0 ~ data``, ``t ~ U(eps, T)``, ``z ~ N(0, I)`` and ``x_t = m(t) x_0 + s(t) z`` the target
score of the perturbation kernel is ``-z / s(t)``. The per-example loss is

* ``weighting="sigma2"`` (eps matching, the paper's default, ``lambda(t) = s(t)^2``):
  ``|| s(t) score(x_t, t) + z ||^2``  (= ``|| eps_theta - z ||^2`` for the eps parameterization);
* ``weighting="likelihood"`` (Song et al. 2021b, ``lambda(t) = g(t)^2``):
  ``g(t)^2 || score(x_t, t) + z / s(t) ||^2``, which makes the loss an upper bound on the
  negative log-likelihood (up to constants);

reduced over the data dimensions by ``"mean"`` or ``"sum"`` (``0.5 * sum``, as the paper's code for
its VE models), then averaged over the batch.

Times: ``t ~ U(eps, T)`` (``"uniform"``), one per stratum of ``[eps, T]`` (``"stratified"``), or, for the
likelihood weighting, drawn from ``q(t) ~ g(t)^2 / s(t)^2`` (``"importance"``, ``"stratified_importance"``;
Song, Durkan, Murray & Ermon 2021) with each term multiplied by ``1 / ((T - eps) q(t))``, so the batch
mean stays an unbiased estimate of the same uniform-time objective with a much smaller variance
(:mod:`scoresde.importance`).
"""

from __future__ import annotations

import torch

from .importance import likelihood_importance
from .score import ScoreFn
from .sde import SDE, expand_to

__all__ = ["DSMLoss", "NonFiniteLossError", "sample_time", "dsm_loss"]

WEIGHTINGS = ("sigma2", "likelihood")
REDUCTIONS = ("mean", "sum")
TIME_SAMPLINGS = ("uniform", "stratified", "importance", "stratified_importance")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def sample_time(batch: int, eps: float, T: float = 1.0, sampling: str = "uniform",
                generator: torch.Generator | None = None, device=None,
                dtype: torch.dtype | None = None, sde: SDE | None = None) -> torch.Tensor:
    """Training times in ``[eps, T]``, shape ``(batch,)``.

    ``"uniform"``: i.i.d. ``U(eps, T)``. ``"stratified"``: one time per batch slot,
    ``t_i = eps + (T - eps) (i + u_i) / B`` with independent ``u_i ~ U[0, 1)`` -- each stratum of
    ``[eps, T]`` is hit exactly once, which lowers the variance of the batch-mean loss.
    ``"importance"`` / ``"stratified_importance"``: ``t_i = F^-1(u_i)`` with ``F`` the CDF of
    ``q(t) ~ g(t)^2 / s(t)^2`` of ``sde`` (required), ``u_i`` i.i.d. or stratified as above (one time per
    stratum of probability ``1 / B`` under ``q``).
    """
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time sampling {sampling!r}; valid: {', '.join(TIME_SAMPLINGS)}")
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
    if sampling.startswith("stratified"):
        u = (torch.arange(batch, device=u.device, dtype=u.dtype) + u) / batch
    if sampling.endswith("importance"):
        if sde is None:
            raise ValueError(f"time sampling {sampling!r} needs the SDE (sde=...)")
        return likelihood_importance(sde, eps).icdf(u)
    return eps + (T - eps) * u


class DSMLoss:
    """Denoising score matching loss, configured once, evaluated on a batch with :meth:`__call__`.

    Args:
        eps: smallest training time (``1e-5`` as the paper).
        weighting: ``"sigma2"`` or ``"likelihood"`` (see the module docstring).
        reduce: ``"mean"`` or ``"sum"`` over data dimensions.
        time_sampling: ``"uniform"``, ``"stratified"``, ``"importance"`` or ``"stratified_importance"``
            (see :func:`sample_time`); the importance samplings need ``weighting="likelihood"``.
        check_finite: raise :class:`NonFiniteLossError` naming the step and the offending times when a
            per-example loss is NaN or inf.
    """

    def __init__(self, eps: float = 1e-5, weighting: str = "sigma2", reduce: str = "mean",
                 time_sampling: str = "uniform", check_finite: bool = True):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduce {reduce!r}; valid: {', '.join(REDUCTIONS)}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time_sampling {time_sampling!r}; valid: {', '.join(TIME_SAMPLINGS)}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps}")
        if time_sampling.endswith("importance") and weighting != "likelihood":
            raise ValueError(
                f"time_sampling={time_sampling!r} draws t proportional to g(t)^2 / s(t)^2, the likelihood "
                f"weighting's own factor; use it with weighting='likelihood' (got {weighting!r})"
            )
        self.eps = eps
        self.weighting = weighting
        self.reduce = reduce
        self.time_sampling = time_sampling
        self.check_finite = check_finite

    def per_example(self, score_fn: ScoreFn, sde: SDE, x0: torch.Tensor, t: torch.Tensor,
                    z: torch.Tensor) -> torch.Tensor:
        """Per-example loss ``(B,)`` at given times ``t`` and noise ``z``."""
        x_t, _, std = sde.marginal_sample(x0, t, noise=z)
        score = score_fn(x_t, t)
        if self.weighting == "sigma2":
            residual = expand_to(std, x0) * score + z
            weight = None
        else:
            residual = score + z / expand_to(std, x0)
            weight = sde.diffusion(t) ** 2
        sq = residual.pow(2).reshape(x0.shape[0], -1)
        per = sq.mean(dim=1) if self.reduce == "mean" else 0.5 * sq.sum(dim=1)
        return per if weight is None else per * weight

    def time_weight(self, sde: SDE, t: torch.Tensor) -> torch.Tensor | float:
        """The factor of each term at times ``t`` drawn by :attr:`time_sampling`: ``1`` for uniform times,
        ``1 / ((T - eps) q(t))`` for importance-sampled ones (unbiased for the uniform-time objective)."""
        if self.time_sampling.endswith("importance"):
            return likelihood_importance(sde, self.eps).weight(t)
        return 1.0

    def __call__(self, score_fn: ScoreFn, sde: SDE, x0: torch.Tensor, *,
                 generator: torch.Generator | None = None, step: int | None = None) -> torch.Tensor:
        """Batch-mean DSM loss of ``x0`` (shape ``(B, ...)``); ``step`` only labels error messages."""
        if x0.dim() < 2:
            raise ValueError(f"x0 must have shape (B, ...) with a batch dimension, got {tuple(x0.shape)}")
        t = sample_time(x0.shape[0], self.eps, sde.T, self.time_sampling, generator, x0.device, x0.dtype, sde)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        per = self.per_example(score_fn, sde, x0, t, z) * self.time_weight(sde, t)
        if self.check_finite and not torch.isfinite(per).all():
            bad = (~torch.isfinite(per)).nonzero().flatten()
            where = f" at step {step}" if step is not None else ""
            times = ", ".join(f"{float(t[i]):.6g}" for i in bad[:5])
            raise NonFiniteLossError(
                f"DSM loss is not finite{where}: {bad.numel()} of {per.numel()} examples, at t = {times}"
                f"{' ...' if bad.numel() > 5 else ''}. Lower the learning rate, check the data for "
                "NaN/inf, or raise the smallest time eps."
            )
        return per.mean()


def dsm_loss(score_fn: ScoreFn, sde: SDE, x0: torch.Tensor, *, eps: float = 1e-5,
             weighting: str = "sigma2", reduce: str = "mean", time_sampling: str = "uniform",
             generator: torch.Generator | None = None, step: int | None = None) -> torch.Tensor:
    """Functional form of :class:`DSMLoss`."""
    return DSMLoss(eps, weighting, reduce, time_sampling)(score_fn, sde, x0, generator=generator, step=step)
