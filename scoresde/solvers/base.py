"""What every sampler shares: noise streams with per-sample seeds, score-call counting with a NaN
guard, the time grid, the prior draw and the final (Tweedie) denoising step."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch

from ..score import ScoreFn
from ..sde import SDE, expand_to

__all__ = ["Sampler", "SamplingError", "NoiseSource", "CountingScore", "time_grid", "tweedie_denoise"]


class SamplingError(FloatingPointError):
    """A sampler produced NaN or inf."""


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
    """Wraps ``score_fn``: counts evaluations (``nfe``) and, every ``check_every`` evaluations, checks
    that the score is finite, stopping with :class:`SamplingError` that names the step and time of
    the check that failed (with the default ``check_every=1``, the first bad evaluation).
    :meth:`check` also checks a state (the samplers call it on their final state, which catches a
    score that hides a non-finite input).
    """

    def __init__(self, score_fn: ScoreFn, check_finite: bool = True, check_every: int = 1):
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.score_fn = score_fn
        self.check_finite = check_finite
        self.check_every = int(check_every)
        self.nfe = 0
        self.step: int | str = "?"

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        s = self.score_fn(x, t)
        if self.check_finite and self.nfe % self.check_every == 0 and not bool(torch.isfinite(s).all()):
            raise SamplingError(
                f"the score became NaN/inf at step {self.step}, t = {float(t.reshape(-1)[0]):.6g}. "
                "Try more steps, a smaller snr, or check the model."
            )
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
    """Base of the samplers: common arguments and the ``sample`` contract.

    Args:
        eps: last time of the reverse process; ``None`` takes the SDE's default ``sde.sampling_eps``
            (the paper's 1e-3 for VP/sub-VP, 1e-5 for VE).
        denoise: the one meaning of ``denoise`` for every sampler: after the last step, at
            ``t = eps``, return Tweedie's estimate ``E[x_0 | x_eps] = (x + s(eps)^2 score(x, eps)) / m(eps)``
            (:func:`tweedie_denoise`; one more score evaluation) instead of the state ``x_eps`` itself
            (which for the SDE samplers still carries the noise of the last step). Default True, the
            paper's noise removal; the configs in conf/solver/ say the same.
        check_finite: stop with :class:`SamplingError` at the first NaN/inf score.
    """

    def __init__(self, eps: float | None = None, denoise: bool = True, check_finite: bool = True):
        if eps is not None and not 0.0 < float(eps) < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps}")
        self.eps = None if eps is None else float(eps)
        self.denoise = bool(denoise)
        self.check_finite = bool(check_finite)
        self.nfe = 0

    def _eps(self, sde: SDE) -> float:
        return sde.sampling_eps if self.eps is None else self.eps

    def _start(self, score_fn: ScoreFn, sde: SDE, shape, generator, seeds, x_T, device, dtype):
        """Validated shape, counting score, noise source and the initial state ``x_T``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
        if x_T is not None:
            if tuple(x_T.shape) != shape:
                raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape} was requested")
            device, dtype = x_T.device, x_T.dtype
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        noise = NoiseSource(shape[1:], shape[0], generator=generator, seeds=seeds, device=device, dtype=dtype)
        x = sde.prior_std * noise() if x_T is None else x_T.clone()
        return CountingScore(score_fn, self.check_finite), noise, x

    def _finish(self, counter: CountingScore, sde: SDE, x: torch.Tensor, t_end: float) -> torch.Tensor:
        counter.check(x)
        if self.denoise:
            counter.step = "denoise"
            t = torch.full((x.shape[0],), t_end, device=x.device, dtype=x.dtype)
            x = tweedie_denoise(counter, sde, x, t)
            counter.check(x)
        self.nfe = counter.nfe
        return x

    @abc.abstractmethod
    def sample(self, score_fn: ScoreFn, sde: SDE, shape, *, generator: torch.Generator | None = None,
               seeds: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = False, device=None, dtype=torch.float32) -> torch.Tensor:
        """Draw ``shape[0]`` samples of the given shape by reversing ``sde`` with ``score_fn``."""

    def __repr__(self) -> str:
        keys = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "nfe"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in keys.items())})"
