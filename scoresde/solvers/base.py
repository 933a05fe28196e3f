"""What every sampler shares, written once: :meth:`Sampler.sample` validates its arguments, draws
``x_T ~ p_T`` from a :class:`NoiseSource` (per-sample seeds), wraps the score in a :class:`CountingScore`
(counts, checks shape and finiteness, drives the progress bar), runs the subclass's steps
(:meth:`Sampler._solve`) and finishes with the finiteness check and Tweedie's denoising step."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..score import ScoreFn
from ..sde import SDE, expand_to

__all__ = ["Sampler", "SamplingError", "NoiseSource", "CountingScore", "batch_time", "time_grid",
           "tweedie_denoise", "one_of"]


class SamplingError(FloatingPointError):
    """A sampler produced NaN or inf."""


def one_of(what: str, value, valid: Sequence) -> None:
    """Refuse a setting outside ``valid`` with ``unknown <what> <value>; valid: ...``."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def batch_time(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``t`` as the ``(B,)`` time tensor of the batch ``x`` (its dtype and device); a tensor passes."""
    if isinstance(t, torch.Tensor):
        return t
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


class NoiseSource:
    """Standard-normal (or ``distribution="uniform"``: ``U[0, 1)``) noise of shape ``(B, *shape)``,
    one draw per call.

    With ``seeds=[s_0, ..., s_{B-1}]`` row ``i`` comes only from its own generator seeded with ``s_i``,
    so a sample does not depend on the batch it is drawn in (seeds ``[0..7]`` together give the same
    rows as each seed alone). Without seeds, one ``generator`` (or the global RNG) draws the whole batch.
    """

    def __init__(self, shape: Sequence[int], batch: int, *, generator: torch.Generator | None = None,
                 seeds: Sequence[int] | None = None, device=None, dtype=torch.float32,
                 distribution: str = "normal"):
        self.shape = tuple(int(s) for s in shape)
        self.batch = int(batch)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.generator = generator
        if distribution not in ("normal", "uniform"):
            raise ValueError(f"unknown distribution {distribution!r}; valid: 'normal', 'uniform'")
        self._draw = torch.randn if distribution == "normal" else torch.rand
        self.generators = None
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if len(seeds) != self.batch:
                raise ValueError(
                    f"got {len(seeds)} seeds for a batch of {self.batch}; pass one seed per sample"
                )
            self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def __call__(self, scale: float = 1.0) -> torch.Tensor:
        """The next draw, times ``scale``."""
        kw = {"device": self.device, "dtype": self.dtype}
        if self.generators is None:
            out = self._draw((self.batch, *self.shape), generator=self.generator, **kw)
        else:
            out = torch.stack([self._draw(self.shape, generator=g, **kw) for g in self.generators])
        return out if scale == 1.0 else out * scale


class CountingScore:
    """The score as a sampler sees it: ``score(x, t)`` with ``t`` a ``(B,)`` tensor or one Python float
    for the batch (:func:`batch_time`). It counts evaluations (``nfe``), advances ``bar`` (a tqdm bar,
    in evaluations) and refuses a score not shaped like ``x`` with a ``ValueError`` naming both shapes
    (a ``torch.Size`` comparison per call: free beside any network). Every ``check_every`` evaluations
    it checks that the score is finite, stopping with :class:`SamplingError` that names the step
    (``step``, set by the sampler) and time of the check that failed (with the default
    ``check_every=1``, the first bad evaluation). :meth:`check` also checks a state (the samplers'
    final state, which catches a score that hides a non-finite input).
    """

    def __init__(self, score_fn: ScoreFn, check_finite: bool = True, check_every: int = 1, bar=None):
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.score_fn = score_fn
        self.check_finite = check_finite
        self.check_every = int(check_every)
        self.bar = bar
        self.nfe = 0
        self.step: int | str = "?"

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        t = batch_time(x, t)
        self.nfe += 1
        s = self.score_fn(x, t)
        if s.shape != x.shape:
            raise ValueError(f"the score function returned shape {tuple(s.shape)} for x of shape "
                             f"{tuple(x.shape)}; a score must have the shape of x")
        if self.check_finite and self.nfe % self.check_every == 0 and not bool(torch.isfinite(s).all()):
            raise SamplingError(
                f"the score became NaN/inf at step {self.step}, t = {float(t.reshape(-1)[0]):.6g}. "
                "Try more steps, a smaller snr, or check the model."
            )
        if self.bar is not None:
            self.bar.update()
        return s

    def check(self, state: torch.Tensor | None = None) -> None:
        """Raise :class:`SamplingError` if ``state`` is not finite (the scores are checked as they come)."""
        if self.check_finite and state is not None and not bool(torch.isfinite(state).all()):
            raise SamplingError("the state became NaN/inf while the score stayed finite (found at the end of "
                                "sampling). Try more steps, a smaller snr, or check the model.")


def time_grid(steps: int, eps: float, T: float = 1.0, device=None, dtype=torch.float64) -> torch.Tensor:
    """``steps + 1`` equally spaced times from ``T`` down to ``eps``."""
    return torch.linspace(T, eps, steps + 1, device=device, dtype=dtype)


def tweedie_denoise(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Tweedie's formula, the posterior mean of the data given ``x_t``:
    ``E[x_0 | x_t] = (x_t + s(t)^2 grad log p_t(x_t)) / m(t)``."""
    std = expand_to(sde.std(t), x)
    return (x + std**2 * score_fn(x, t)) / expand_to(sde.mean_coef(t), x)


class Sampler(abc.ABC):
    """Base of the samplers. :meth:`sample` is the one entry: a subclass validates its own settings in
    ``__init__`` and writes only its steps, :meth:`_solve` (and, for the progress bar's total,
    :meth:`_planned_nfe`).

    Args:
        steps: the number of steps (``None`` for a sampler without a fixed grid); must be >= 1.
        eps: last time of the reverse process; ``None`` takes the SDE's default ``sde.sampling_eps``
            (the paper's 1e-3 for VP/sub-VP, 1e-5 for VE).
        denoise: the one meaning of ``denoise`` for every sampler: after the last step, at
            ``t = eps``, return Tweedie's estimate ``E[x_0 | x_eps] = (x + s(eps)^2 score(x, eps)) / m(eps)``
            (:func:`tweedie_denoise`; one more score evaluation) instead of the state ``x_eps`` itself
            (which for the SDE samplers still carries the noise of the last step). Default True, the
            paper's noise removal; the configs in conf/solver/ say the same.
        check_finite: stop with :class:`SamplingError` at the first NaN/inf score.
    """

    def __init__(self, steps: int | None = None, eps: float | None = None, denoise: bool = True,
                 check_finite: bool = True):
        if steps is not None:
            if int(steps) < 1:
                raise ValueError(f"steps must be >= 1, got {steps}")
            self.steps = int(steps)
        if eps is not None and not 0.0 < float(eps) < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps}")
        self.eps = None if eps is None else float(eps)
        self.denoise = bool(denoise)
        self.check_finite = bool(check_finite)
        self.nfe = 0

    def end_time(self, sde: SDE) -> float:
        """The last time of sampling: ``eps``, or the SDE's ``sampling_eps`` when ``eps`` is None."""
        return sde.sampling_eps if self.eps is None else self.eps

    @abc.abstractmethod
    def _solve(self, score: CountingScore, sde: SDE, x: torch.Tensor, eps: float,
               noise: NoiseSource) -> torch.Tensor:
        """The sampler's steps: from ``x = x_T`` at ``sde.T`` down to ``eps``; returns ``x_eps``.

        ``score(x, t)`` takes a float ``t`` (or a ``(B,)`` tensor) and counts itself; set
        ``score.step`` to the step number so that a NaN is reported where it happened. ``noise(scale)``
        is a fresh ``N(0, scale^2 I)`` draw of the batch's shape (per-sample seeds, ``x``'s dtype)."""

    def _planned_nfe(self) -> int | None:
        """Score evaluations :meth:`_solve` will make, when known in advance (the progress bar's total)."""
        return None

    @torch.no_grad()
    def sample(self, score_fn: ScoreFn, sde: SDE, shape, *, generator: torch.Generator | None = None,
               seeds: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = False, device=None, dtype=torch.float32) -> torch.Tensor:
        """Draw ``shape[0]`` samples of ``shape[1:]`` by reversing ``sde`` with ``score_fn``.

        Args:
            generator, seeds: the noise (``seeds``: one per sample, so a sample depends on its seed only).
            x_T: the initial state (default: a draw from the prior ``N(0, prior_std^2 I)``).
            progress: one tqdm bar, counting score evaluations.
            device, dtype: of the samples (``x_T``'s when given; default the generator's device).
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
        if not callable(score_fn):
            raise ValueError(f"score_fn must be a callable score_fn(x, t), got {type(score_fn).__name__}")
        if x_T is not None:
            if tuple(x_T.shape) != shape:
                raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape} was requested")
            device, dtype = x_T.device, x_T.dtype
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        noise = NoiseSource(shape[1:], shape[0], generator=generator, seeds=seeds, device=device, dtype=dtype)
        x = sde.prior_std * noise() if x_T is None else x_T.clone()
        eps = self.end_time(sde)
        planned = self._planned_nfe()
        total = None if planned is None else planned + self.denoise
        bar = tqdm(total=total, desc=type(self).__name__, unit="nfe", disable=not progress, leave=False)
        with bar:
            score = CountingScore(score_fn, self.check_finite, bar=bar)
            x = self._solve(score, sde, x, eps, noise)
            score.check(x)
            if self.denoise:
                score.step = "denoise"
                x = tweedie_denoise(score, sde, x, batch_time(x, eps))
                score.check(x)
        self.nfe = score.nfe
        return x

    def __repr__(self) -> str:
        keys = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "nfe"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in keys.items())})"
