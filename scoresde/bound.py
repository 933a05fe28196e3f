"""The variational bound on the negative log-likelihood (Song, Durkan, Murray & Ermon 2021: Theorem 1, in the
per-datapoint denoising form the paper derives from it).

For a data point ``x`` (time 0), the forward SDE run from ``x`` and the model's reverse SDE started from the
prior ``pi`` with the score ``s_theta``, the KL chain rule between the two path measures on ``[eps, T]`` and
Girsanov's theorem give, for any ``s_theta``,

    E_{x_eps ~ p_0eps(.|x)}[-log p_eps^theta(x_eps)]
        <= L(x) = -E[log pi(x_T)] + 1/2 int_eps^T g(t)^2 E_z || s_theta(x_t, t) + z / s(t) ||^2 dt
                  + D (log s(eps) - log s(T)),

with ``x_t = m(t) x + s(t) z`` (the perturbation kernel of training). This is the paper's denoising form: the
middle term is the likelihood-weighted DSM loss (``0.5 * sum`` reduction) integrated over ``t``, so only score
evaluations are needed (no divergence, no ODE). The last term is the difference of the kernel's entropies,
``H(p_0eps(.|x)) - H(p_0T(.|x))``, i.e. the paper's ``-1/2 int (g^2 E||grad log p_0t||^2 + 2 div f) dt``.
The prior term is in closed form for the Gaussian prior ``N(0, sigma_p^2 I)``:
``D/2 log(2 pi sigma_p^2) + (m(T)^2 |x|^2 + D s(T)^2) / (2 sigma_p^2)``.

With the exact score the bound is tight up to the prior mismatch: averaged over ``x ~ p_0``,
``E[L(x)] = E_{p_eps}[-log p_eps] + KL(p_T || pi)`` (de Bruijn's identity), which the tests check on the
Gaussian-mixture oracle.

The time integral is estimated with ``time_samples`` times per example, stratified and importance-sampled
from ``q(t) ~ g^2 / s^2`` by default (:mod:`scoresde.importance`): one score evaluation per time sample and
batch. Bits/dim of discrete data use the same dequantization and offset as the ODE's
:func:`scoresde.likelihood.bits_per_dim`, so the two are directly comparable (the ``s(eps)`` smoothing, about
``1e-3``, is far below a quantization bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .importance import likelihood_importance
from .losses import TIME_SAMPLINGS, DSMLoss
from .quantization import bits_per_dim_from_logp, check_integer_data, dequantize
from .score import ScoreFn
from .sde import SDE
from .solvers.base import NoiseSource

__all__ = ["BoundResult", "bound_bits_per_dim", "variational_bound"]

#: seed offsets of the per-example streams (the ODE's bits_per_dim: s for probes, s + 7919 for dequantization)
_TIME_STREAM, _NOISE_STREAM, _DEQUANTIZATION_STREAM = 104729, 1299709, 7919


@dataclass
class BoundResult:
    """``nll`` (B,): the bound ``L(x)`` in nats; its terms ``prior`` (B,), ``diffusion`` (B,) and
    ``kernel_entropy`` (a number); ``nfe``: score evaluations; ``bpd`` (B,): bits/dim of discrete data
    (:func:`bound_bits_per_dim` only)."""

    nll: torch.Tensor
    prior: torch.Tensor
    diffusion: torch.Tensor
    kernel_entropy: float
    nfe: int
    bpd: torch.Tensor | None = None


def _noise(shape, batch: int, distribution: str, generator, seeds, offset: int, device, dtype):
    """One ``(batch, *shape)`` draw; with ``seeds``, row ``i`` from the generator ``seeds[i] + offset``."""
    seeds = None if seeds is None else [int(s) + offset for s in seeds]
    return NoiseSource(shape, batch, generator=generator, seeds=seeds, device=device, dtype=dtype,
                       distribution=distribution)()


def variational_bound(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, *, time_samples: int = 100,
                      time_sampling: str = "stratified_importance", eps: float = 1e-5,
                      generator: torch.Generator | None = None,
                      seeds: Sequence[int] | None = None) -> BoundResult:
    """The bound ``L(x)`` on ``-log p_eps`` in nats per example (see the module docstring).

    Args:
        x: continuous data ``(B, ...)`` in the model's data range.
        time_samples: times per example (= score evaluations on the batch).
        time_sampling: how the times of each example are drawn (:data:`scoresde.losses.TIME_SAMPLINGS`); the
            stratified ones put one time in each of ``time_samples`` strata.
        eps: the smallest time (the likelihood's ``1e-5``).
        generator / seeds: the randomness; with ``seeds`` (one per example) each example's times and noise
            come from its own generators, so its value does not depend on the batch.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, ...) with a batch dimension, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor in the model's data range; "
                         "for integer data use bound_bits_per_dim")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    if int(time_samples) < 1:
        raise ValueError(f"time_samples must be >= 1, got {time_samples}")
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time_sampling {time_sampling!r}; valid: {', '.join(TIME_SAMPLINGS)}")
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    if seeds is not None and len(seeds) != x.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {x.shape[0]}; pass one seed per example")
    b, k, d = x.shape[0], int(time_samples), x[0].numel()
    loss = DSMLoss(eps, weighting="likelihood", reduce="sum", time_sampling=time_sampling, check_finite=False)
    common = {"generator": generator, "seeds": seeds, "device": x.device, "dtype": x.dtype}
    u = _noise((k,), b, "uniform", offset=_TIME_STREAM, **common)
    if time_sampling.startswith("stratified"):
        u = (torch.arange(k, device=x.device, dtype=x.dtype) + u) / k
    if time_sampling.endswith("importance"):
        t = likelihood_importance(sde, eps).icdf(u)
    else:
        t = eps + (sde.T - eps) * u
    z = _noise((k, *x.shape[1:]), b, "normal", offset=_NOISE_STREAM, **common)
    diffusion = torch.zeros(b, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for j in range(k):
            per = loss.per_example(score_fn, sde, x, t[:, j], z[:, j]) * loss.time_weight(sde, t[:, j])
            diffusion += per.double()
    diffusion *= (sde.T - eps) / k
    x64 = x.detach().double().reshape(b, -1)
    m_T, s_T, var_p = float(sde.mean_coef(float(sde.T))), float(sde.std(float(sde.T))), sde.prior_std**2
    prior = 0.5 * d * math.log(2 * math.pi * var_p) + (m_T**2 * x64.pow(2).sum(1) + d * s_T**2) / (2 * var_p)
    entropy = d * (math.log(float(sde.std(float(eps)))) - math.log(s_T))
    return BoundResult(nll=prior + diffusion + entropy, prior=prior, diffusion=diffusion,
                       kernel_entropy=entropy, nfe=k)


def bound_bits_per_dim(score_fn: ScoreFn, sde: SDE, x_int: torch.Tensor, *, levels: int = 256,
                       data_range: tuple[float, float] = (-1.0, 1.0), dequantization: str = "uniform",
                       generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
                       dtype: torch.dtype = torch.float32, **bound_kwargs) -> BoundResult:
    """The bound in bits per dimension of integer data ``x_int`` in ``[0, levels)``:

        bits/dim <= L(x) / (D ln 2) + log2(levels) - log2(hi - lo),

    with ``x`` dequantized as in :func:`scoresde.likelihood.bits_per_dim` (with ``seeds``, the same
    dequantization noise as the ODE's value of the same example, so the two sit side by side).
    ``bound_kwargs`` go to :func:`variational_bound` (``time_samples``, ``time_sampling``, ``eps``).
    """
    if x_int.dim() < 2:
        raise ValueError(f"x_int must have shape (B, ...) with a batch dimension, got {tuple(x_int.shape)}")
    check_integer_data(x_int, levels)
    u = None
    if seeds is not None and dequantization == "uniform":
        u = _noise(x_int.shape[1:], x_int.shape[0], "uniform", None, seeds, _DEQUANTIZATION_STREAM,
                   x_int.device, dtype)
    x = dequantize(x_int, levels, data_range, dequantization, generator=generator, dtype=dtype, u=u)
    res = variational_bound(score_fn, sde, x, generator=generator, seeds=seeds, **bound_kwargs)
    res.bpd = bits_per_dim_from_logp(-res.nll, x[0].numel(), levels, data_range)
    return res
