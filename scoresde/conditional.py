"""Controllable generation (Song et al. 2021, section 5 and appendix I): guidance and inverse problems.

Guidance is a transformation of the score, so every sampler works with it unchanged:

    grad log p_t(x | y) = grad log p_t(x) + w grad_x log p_t(y | x)         (classifier guidance, eq. 14)
    s_w(x, y)           = (1 + w) s(x, y) - w s(x, null)                      (classifier-free guidance)

:func:`classifier_guided_score` takes a noise-conditional classifier ``p_t(y | x)`` (its logits),
:func:`cfg_score` a class-conditional score model trained with label dropout (Ho & Salimans 2022).

Linear inverse problems with an orthogonal matrix ``U`` over channels: the observation is
``y = (U x)[mask]``. Inpainting is ``U = I``; colorization is the paper's gray/chroma decoupling
(:func:`colorization_transform`, its first row ``(1, 1, 1) / sqrt(3)`` the gray level). Because the
SDEs here are isotropic (``f = a(t) x``, scalar ``g``), ``u = U x`` diffuses by the same SDE with the
score ``U s(U^T u, t)``: :func:`impute` works on ``u`` and maps back with ``U^T``. Two methods:

* ``"paper"``: Algorithms 4-5 of the appendix. After every step (predictor, each corrector move, or
  ODE interval) the known coordinates are replaced by a fresh draw of the forward-perturbed
  observation ``m(t) y + s(t) z`` at the state's time ``t``. Biased: the unknown coordinates never
  see how likely the observation is under their current values (the reason it picks the wrong
  mixture component of the oracle far more often than the exact conditional does).
* ``"smc"``: a particle filter over the same reverse kernels, SMCDiff (Trippe et al., "Diffusion
  probabilistic modeling of protein backbones in 3D for the motif-scaffolding problem", ICLR 2023,
  arXiv:2206.04119). One forward path ``y_T, ..., y_eps = y`` of the observation is drawn; ``particles``
  copies of each row (a population: all particles of the rows that share an observation) move by the
  reverse kernel ``N(mean(x_t), std^2 I)`` with the known coordinates pinned to the path, weighted by
  that kernel's density of the next known values ``N(y_{t'}; mean(x_t)_o, std^2 I)``, resampled when
  the effective sample size drops under half. Rows sharing an observation are therefore coupled (a
  row then depends on its batch); ``N`` rows of one observation with ``particles=1`` are one
  population of ``N``, which is how to draw many samples of one observation.
  Because the forward noise of the known coordinates does not depend on the unknown ones, the
  weighted particles target ``p_eps(x_u | x_o = y)`` exactly as ``particles -> inf`` (for exact
  scores and small steps); one particle per row is returned, drawn by the final weights.

Sampler -> step loop (the solvers' own loops have no per-step hook, so imputation runs its own,
built from the SDE's public methods; each sampler's settings are honoured):

* :class:`~scoresde.solvers.EulerMaruyama` (fixed steps): the Euler-Maruyama step
  of the reverse SDE, ``N(x - [f - g^2 s] dt, g^2 dt)``;
* :class:`~scoresde.solvers.PredictorCorrector` (``reverse_diffusion`` predictor; ``langevin`` or
  ``none`` corrector): the reverse-diffusion step ``N((2 - r) x + q^2 s, q^2)`` preceded by
  ``corrector_steps`` Langevin moves ``N(x + h s, 2 h)``, ``h = 2 r^2 (snr s(t))^2`` (as the sampler);
* :class:`~scoresde.solvers.ProbabilityFlowODE`: the probability-flow ODE solved interval by interval
  on ``steps`` equal intervals with the sampler's ``solve_ivp`` method and tolerances (``"paper"``
  only: a particle filter needs a stochastic kernel).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .score import NetworkScore, ScoreFn
from .sde import SDE
from .solvers import (
    PredictorCorrector,
    ProbabilityFlowODE,
    ReverseSDESolver,
    integrate,
    probability_flow_drift,
)
from .solvers.base import NoiseSource, Sampler, batch_time, time_grid, tweedie_denoise

__all__ = [
    "classifier_guided_score", "cfg_score", "impute", "colorization_transform", "over_channels",
    "IMPUTATION_METHODS", "network_classifier", "class_conditional_score", "reverse_kernels", "populations",
    "resample", "final_draw",
]

#: the imputation methods of :func:`impute`
IMPUTATION_METHODS = ("paper", "smc")


# --- guidance ------------------------------------------------------------------------------------
def _labels(y, batch: int, device) -> torch.Tensor:
    y = torch.as_tensor(y, device=device)
    if y.dtype.is_floating_point or y.dim() > 1:
        raise ValueError(f"labels must be integers of shape (B,) or a scalar, got {y.dtype} {tuple(y.shape)}")
    if y.dim() == 1 and y.shape[0] != batch:
        raise ValueError(f"got {y.shape[0]} labels for a batch of {batch}; pass one label per sample")
    return y.long().expand(batch)


def _check_range(y: torch.Tensor, num_classes: int) -> None:
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise ValueError(f"class {int(y[bad][0])} is outside the classifier's labels 0..{num_classes - 1}")


def classifier_guided_score(score_fn: ScoreFn, classifier_fn: Callable, y, scale: float = 1.0) -> ScoreFn:
    """``score_fn(x, t) + scale * grad_x log softmax(classifier_fn(x, t))[y]``: the score of
    ``p_t(x | y)`` at ``scale = 1`` (eq. 14), sharpened (or flattened) towards class ``y`` otherwise.

    ``classifier_fn(x, t)`` returns logits of shape ``(B, K)`` of a noise-conditional classifier
    ``p_t(y | x)``; ``y`` is a ``(B,)`` tensor of labels (or one label for all). A classifier with a
    ``num_classes`` attribute has its labels checked here, otherwise at the first call.
    """
    if not float(scale) >= 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    num_classes = getattr(classifier_fn, "num_classes", None)
    if num_classes is not None:
        _check_range(torch.as_tensor(y).reshape(-1), int(num_classes))

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = _labels(y, x.shape[0], x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = classifier_fn(xg, t)
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError("classifier_fn must return logits of shape (B, K), "
                                 f"got {tuple(logits.shape)}")
            _check_range(labels, logits.shape[1])
            log_p = torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return score_fn(x, t) + scale * grad.to(x.dtype)

    return guided


def cfg_score(cond_score_fn: Callable, y, scale: float, null_label: int) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans 2022): ``(1 + w) s(x, t, y) - w s(x, t, null)`` from one
    class-conditional score model ``cond_score_fn(x, t, labels)`` trained with label dropout to
    ``null_label``. At ``w = 0`` this is the conditional model itself (one evaluation per call)."""
    if not float(scale) >= 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if bool((torch.as_tensor(y) == null_label).any()):
        raise ValueError(f"the null label {null_label} is not a class to guide towards")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = _labels(y, x.shape[0], x.device)
        cond = cond_score_fn(x, t, labels)
        if scale == 0:
            return cond
        return (1.0 + scale) * cond - scale * cond_score_fn(x, t, torch.full_like(labels, null_label))

    return guided


def network_classifier(net: Callable, sde: SDE) -> Callable:
    """``logits_fn(x, t) = net(x, sde.noise_label(t))`` from a noise-conditional classifier network
    (``net.num_classes`` logits), for :func:`classifier_guided_score`."""
    num_classes = getattr(net, "num_classes", None)

    def logits_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x, sde.noise_label(torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])))

    logits_fn.num_classes = num_classes
    return logits_fn


def class_conditional_score(net: Callable, sde: SDE, parameterization: str = "eps") -> Callable:
    """``cond_score_fn(x, t, y)`` from a class-conditional network ``net(x, c, y)`` (``net.num_classes
    > 0``; its ``null_label`` is the unconditional model), for :func:`cfg_score`."""
    if not getattr(net, "num_classes", 0):
        raise ValueError("classifier-free guidance needs a class-conditional score model; this one has no "
                         "class conditioning (train it with model.num_classes=K)")

    def cond_score_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return NetworkScore(lambda v, c: net(v, c, y), sde, parameterization)(x, t)

    return cond_score_fn


# --- the orthogonal transform ------------------------------------------------------------------
def colorization_transform(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The paper's orthogonal gray/chroma decoupling of RGB (rows: gray ``(1, 1, 1)/sqrt 3`` and two
    chroma directions ``(-2, 1, 1)/sqrt 6``, ``(0, 1, -1)/sqrt 2``); ``u = U x`` over channels."""
    u = torch.tensor([[1.0, 1.0, 1.0], [-2.0, 1.0, 1.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).to(dtype)


def over_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``U x`` over dimension 1 (channels of images ``(B, C, ...)``, coordinates of vectors ``(B, C)``)."""
    return torch.einsum("ij,bj...->bi...", matrix.to(x), x)


# --- imputation ---------------------------------------------------------------------------------
def impute(sampler: Sampler, score_fn: ScoreFn, sde: SDE, known: torch.Tensor, mask: torch.Tensor, *,
           transform: torch.Tensor | None = None, method: str = "paper",
           generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
           steps: int | None = None, particles: int = 16, progress: bool = False) -> torch.Tensor:
    """Sample ``p(x | (U x)[mask] = (U known)[mask])`` for each row of ``known``.

    Args:
        sampler: an :class:`EulerMaruyama`, :class:`PredictorCorrector` or :class:`ProbabilityFlowODE`
            whose settings (steps, eps, snr, tolerances, denoise) the imputation loop uses.
        known: ``(B, C, ...)`` data whose known coordinates hold the observation (others are ignored).
        mask: bool, True where a coordinate of ``U known`` is known; broadcastable to ``known``.
        transform: an orthogonal ``(C, C)`` matrix ``U`` over channels (None: ``U = I``, inpainting;
            :func:`colorization_transform` for colorization with the gray channel known).
        method: ``"paper"`` (replacement, Algorithms 4-5) or ``"smc"`` (particle filter, SMCDiff).
        generator, seeds: the noise (``seeds``: one per row, a row independent of its batch).
        steps: the grid (default: the sampler's ``steps``; 100 for the ODE, which has no grid).
        particles: particles per row for ``"smc"`` (rows with equal observations pool theirs).

    Returns samples shaped like ``known``: the known coordinates equal the observation exactly for
    ``U = I`` (and to rounding, ``~1e-7``, through ``U^T`` otherwise).
    """
    u0, mask, unmix, score_u = _setup(score_fn, known, mask, transform)
    if method not in IMPUTATION_METHODS:
        raise ValueError(f"unknown imputation method {method!r}; valid: {', '.join(IMPUTATION_METHODS)}")
    kind, kernel = reverse_kernels(sampler)
    if steps is None:
        steps = getattr(sampler, "steps", 100)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    eps = sampler.end_time(sde)
    times = time_grid(int(steps), eps, sde.T).tolist()
    bar = tqdm(total=int(steps), desc=f"impute {method}/{kind}", disable=not progress, leave=False)
    with torch.no_grad():
        if method == "paper":
            noise = NoiseSource(u0.shape[1:], u0.shape[0], generator=generator, seeds=seeds,
                                device=u0.device, dtype=u0.dtype)
            u = _replacement(kernel, score_u, sde, u0, mask, noise, times, bar)
        else:
            if kind == "ode":
                raise ValueError("method='smc' needs a stochastic sampler (em or pc), not the ODE")
            if int(particles) < 1:
                raise ValueError(f"particles must be >= 1, got {particles}")
            noise = NoiseSource((int(particles), *u0.shape[1:]), u0.shape[0], generator=generator,
                                seeds=seeds, device=u0.device, dtype=u0.dtype)
            u = _smc(kernel, score_u, sde, u0, mask, noise, times, bar)
        bar.close()
        if sampler.denoise:
            u = tweedie_denoise(score_u, sde, u, batch_time(u, eps))
        return unmix(torch.where(mask, u0, u))


def _setup(score_fn: ScoreFn, known: torch.Tensor, mask, transform):
    """Validated inputs in the transformed space: ``u0 = U known``, the boolean mask broadcast to
    ``known``'s shape, the map back ``u -> U^T u`` and the score ``U s(U^T u, t)``."""
    if known.dim() < 2:
        raise ValueError(f"known must be a batch (B, C, ...), got shape {tuple(known.shape)}")
    mask = torch.as_tensor(mask, device=known.device)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True where known), got {mask.dtype}")
    try:
        mask = mask.expand(known.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape "
                         f"{tuple(known.shape)}") from None
    if transform is None:
        return known, mask, (lambda u: u), score_fn
    transform = torch.as_tensor(transform)
    c = known.shape[1]
    if transform.dim() != 2 or transform.shape[0] != transform.shape[1]:
        raise ValueError(f"transform must be a square (C, C) matrix, got shape {tuple(transform.shape)}")
    if transform.shape[0] != c:
        raise ValueError(f"the transform acts on {transform.shape[0]} channels but the data has {c} "
                         "(colorization needs 3-channel RGB data)")
    eye = torch.eye(c, dtype=torch.float64)
    if not torch.allclose(transform.double() @ transform.double().T, eye, atol=1e-5):
        raise ValueError("transform must be orthogonal (U U^T = I)")
    inverse = transform.T

    def score_u(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return over_channels(transform, score_fn(over_channels(inverse, u), t))

    return over_channels(transform, known), mask, (lambda u: over_channels(inverse, u)), score_u


def _at(score: ScoreFn, x: torch.Tensor, t: float) -> torch.Tensor:
    return score(x, batch_time(x, t))


def _em_kernel(score, sde: SDE, x, t: float, t_next: float):
    """Euler-Maruyama step of the reverse SDE (eq. 6): ``N(x - [f - g^2 s] dt, g^2 dt)``."""
    dt = t - t_next
    return x - sde.reverse_drift(x, t, _at(score, x, t)) * dt, sde.diffusion(t) * math.sqrt(dt)


def _reverse_diffusion_kernel(score, sde: SDE, x, t: float, t_next: float):
    """Reverse-diffusion predictor (eq. 46-47): ``N((2 - r) x + q^2 s, q^2)``."""
    r, q = sde.transition(t, t - t_next)
    return (2.0 - r) * x + q * q * _at(score, x, t), q


def _langevin_kernel(score, sde: SDE, x, t: float, t_next: float, snr: float):
    """Langevin move at ``t``, the PC sampler's corrector: ``N(x + h s, 2 h)``,
    ``h = 2 r^2 (snr s(t))^2``."""
    h = 2.0 * sde.langevin_alpha(t, t - t_next) * (snr * sde.std(t)) ** 2
    return x + h * _at(score, x, t), math.sqrt(2.0 * h)


def _ode_step(sampler: ProbabilityFlowODE, score, sde: SDE, x, t: float, t_next: float) -> torch.Tensor:
    """The probability-flow ODE (eq. 13) from ``t`` to ``t_next`` with the sampler's ``solve_ivp``."""

    def rhs(s: float, y: torch.Tensor) -> torch.Tensor:
        return probability_flow_drift(score, sde, y, s, dtype=x.dtype)

    return integrate(rhs, x, t, t_next, method=sampler.method, rtol=sampler.rtol, atol=sampler.atol,
                     blas_threads=sampler.blas_threads)[0]


def reverse_kernels(sampler: Sampler):
    """The sampler's kind and its step: ``(correctors, predictor)`` Gaussian kernels returning
    ``(mean, std)``, or the ODE step."""
    if isinstance(sampler, ReverseSDESolver):
        if sampler.method != "euler" or sampler.adaptive:
            raise ValueError("imputation with a reverse-SDE solver needs method=euler and adaptive=false: "
                             f"solver=em (got method={sampler.method!r}, adaptive={sampler.adaptive})")
        return "em", ((), _em_kernel)
    if isinstance(sampler, PredictorCorrector):
        if sampler.predictor != "reverse_diffusion" or sampler.corrector not in ("langevin", "none"):
            raise ValueError("imputation with solver=pc needs predictor=reverse_diffusion and corrector="
                             f"langevin|none (got {sampler.predictor}/{sampler.corrector})")
        n = sampler.corrector_steps if sampler.corrector == "langevin" else 0

        def corrector(score, sde, x, t, t_next):
            return _langevin_kernel(score, sde, x, t, t_next, sampler.snr)

        return "pc", ((corrector,) * n, _reverse_diffusion_kernel)
    if isinstance(sampler, ProbabilityFlowODE):
        return "ode", lambda score, sde, x, t, t_next: _ode_step(sampler, score, sde, x, t, t_next)
    raise ValueError(f"imputation supports the em, pc and ode samplers, not {type(sampler).__name__}")


def _replacement(kernel, score, sde: SDE, y, mask, noise: NoiseSource, times: list[float],
                 bar) -> torch.Tensor:
    """The paper's imputation (Algorithms 4-5): reverse steps, each followed by replacing the known
    coordinates with a fresh draw ``m(t) y + s(t) z`` of the perturbed observation at the state's time."""

    def replace(x, t):
        return torch.where(mask, sde.mean_coef(t) * y + sde.std(t) * noise(), x)

    x = replace(sde.prior_std * noise(), times[0])
    for t, t_next in zip(times[:-1], times[1:]):
        if callable(kernel):  # the ODE
            x = kernel(score, sde, x, t, t_next)
        else:
            correctors, predictor = kernel
            for correct in correctors:
                mean, std = correct(score, sde, x, t, t_next)
                x = replace(mean + std * noise(), t)
            mean, std = predictor(score, sde, x, t, t_next)
            x = mean + std * noise()
        x = replace(x, t_next)
        bar.update(1)
    return x


def _smc(kernel, score, sde: SDE, y, mask, noise: NoiseSource, times: list[float], bar) -> torch.Tensor:
    """SMCDiff (Trippe et al. 2023). A population is all particles of the rows that share an
    observation (``K`` per row); its known coordinates are pinned to one forward path
    ``y_T, ..., y_eps = y`` of that observation, its particles weighted by the reverse kernel's density
    ``N(y_{t'}; mean(x_t)_o, std^2 I)`` of the next known values and resampled (systematically, within
    the population) when its effective sample size falls below half its size; the returned particles
    are a final systematic resample, shuffled within the population."""
    correctors, predictor = kernel
    batch, k = noise.batch, noise.shape[0]
    flat = (batch * k, *y.shape[1:])

    def draw():
        return noise().reshape(flat)

    mask_p = mask.repeat_interleave(k, dim=0)
    y_p = y.repeat_interleave(k, dim=0)
    members, valid, first = populations(torch.where(mask_p, y_p, 0.0), mask_p)
    path = [y_p]  # y at times[-1] = eps, then up the grid by exact transitions, one path per population
    for t_prev, t in zip(times[::-1][:-1], times[::-1][1:]):
        r, q = sde.transition(t, t - t_prev)
        path.append(r * path[-1] + q * draw()[first])
    path = path[::-1]  # path[i] at times[i]

    x = torch.where(mask_p, path[0], sde.prior_std * draw())
    log_w = torch.zeros(batch * k, dtype=torch.float64, device=y.device)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        for correct in correctors:  # MCMC moves of the unknown coordinates at fixed y_t
            mean, std = correct(score, sde, x, t, t_next)
            x = torch.where(mask_p, path[i], mean + std * draw())
        mean, std = predictor(score, sde, x, t, t_next)
        sq = torch.where(mask_p, path[i + 1] - mean, 0.0).reshape(batch * k, -1).double().pow(2).sum(-1)
        log_w = log_w - 0.5 * sq / float(std) ** 2
        log_w, ancestors = resample(log_w, members, valid, draw, threshold=0.5)
        x = torch.where(mask_p, path[i + 1], mean[ancestors] + std * draw())
        bar.update(1)
    return x[final_draw(log_w, members, valid, draw)].reshape(batch, k, *y.shape[1:])[:, 0]


def final_draw(log_w: torch.Tensor, members, valid, draw) -> torch.Tensor:
    """The particle each slot returns at the end of a particle filter: a final systematic resample by the
    weights, shuffled within the population (a row gets a uniformly random member of the resampled set)."""
    _, ancestors = resample(log_w, members, valid, draw, threshold=float("inf"))
    u = draw().reshape(log_w.shape[0], -1)[:, 0][members].masked_fill(~valid, math.inf)
    shuffled = members.gather(1, torch.argsort(u, dim=1))
    order = torch.arange(log_w.shape[0], device=log_w.device)
    order[members[valid]] = shuffled[valid]
    return ancestors[order]


def populations(observed: torch.Tensor, mask: torch.Tensor):
    """Group the particles by observation: ``members`` ``(G, M)`` particle indices of each population
    (padded), ``valid`` ``(G, M)``, and ``first`` ``(P,)`` the first particle of each one's population
    (whose noise draws the population's path)."""
    key = torch.cat([observed.reshape(observed.shape[0], -1), mask.reshape(mask.shape[0], -1).to(observed)],
                    dim=1)
    _, group = torch.unique(key, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(order.numel(), device=order.device) - starts[group[order]]
    members = torch.zeros(counts.numel(), int(counts.max()), dtype=torch.long, device=order.device)
    valid = torch.zeros_like(members, dtype=torch.bool)
    members[group[order], slot] = order
    valid[group[order], slot] = True
    return members, valid, members[group, 0]


def resample(log_w: torch.Tensor, members, valid, draw, threshold: float, systematic: bool = True):
    """Resampling within each population whose effective sample size is below ``threshold`` times its
    size: systematic (one uniform ``U`` per population, points ``(j + U) / M``; lower variance than
    multinomial, Douc & Cappe 2005) or multinomial (one uniform per particle), by the inverse CDF of
    the weights; uniforms are ``Phi(z)`` of the noise source's draws. Returns the new log-weights (zero
    where resampled) and the ancestor of every particle."""
    lw = log_w[members].masked_fill(~valid, -math.inf)  # (G, M)
    w = torch.softmax(lw, dim=1)
    size = valid.sum(1, keepdim=True)
    redo = w.pow(2).sum(1).reciprocal() < threshold * size[:, 0]  # (G,)
    u = torch.special.ndtr(draw().reshape(log_w.shape[0], -1)[:, 0].double())[members]  # (G, M)
    if systematic:
        u = (torch.arange(members.shape[1], device=u.device) + u[:, :1]) / size
    pick = torch.searchsorted(w.cumsum(1), u).clamp_max(size - 1)
    chosen = torch.where(redo[:, None], members.gather(1, pick), members)
    ancestors = torch.arange(log_w.shape[0], device=log_w.device)
    ancestors[members[valid]] = chosen[valid]
    redo_p = torch.zeros_like(log_w, dtype=torch.bool)
    redo_p[members[valid]] = redo[:, None].expand_as(members)[valid]
    return torch.where(redo_p, 0.0, log_w), ancestors
