"""What every sampler shares: noise streams with per-sample seeds, score-call counting with a NaN
guard, the time grid, the prior draw and the final (Tweedie) denoising step."""

from __future__ import annotations

import abc
import math
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
    rows as each seed alone). Rows are drawn in blocks of ``block`` calls per generator to keep the
    per-step cost low; the block size depends on the per-example size only, never on ``B``.
    Without seeds, one ``generator`` (or the global RNG) draws the whole batch.
    """

    def __init__(self, shape: Sequence[int], batch: int, *, generator: torch.Generator | None = None,
                 seeds: Sequence[int] | None = None, device=None, dtype=torch.float32,
                 distribution: str = "normal"):
        self.shape = tuple(int(s) for s in shape)
        self.batch = int(batch)
        self._full_shape = (self.batch, *self.shape)
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
            numel = max(1, int(torch.Size(self.shape).numel()))
            self.block = max(1, min(32, (1 << 16) // numel))
            self._buffer: torch.Tensor | None = None
            self._pos = self.block

    def __call__(self, scale: float = 1.0) -> torch.Tensor:
        """The next draw, times ``scale`` (fused into the draw where possible)."""
        if self.generators is None:
            if self._draw is torch.randn and scale != 1.0:  # one call: N(0, scale^2) directly
                return torch.normal(0.0, scale, self._full_shape, generator=self.generator,
                                    device=self.device, dtype=self.dtype)
            out = self._draw(self._full_shape, generator=self.generator, device=self.device, dtype=self.dtype)
            return out if scale == 1.0 else out.mul_(scale)
        if self._pos == self.block:
            self._buffer = torch.stack([
                self._draw((self.block, *self.shape), generator=g, device=self.device, dtype=self.dtype)
                for g in self.generators
            ], dim=1)  # (block, B, *shape)
            self._pos = 0
        out = self._buffer[self._pos]
        self._pos += 1
        return out if scale == 1.0 else out * scale


class CountingScore:
    """Wraps ``score_fn``: counts evaluations (``nfe``) and stops with :class:`SamplingError` naming
    the step and time where the score first became NaN or inf.

    The check is batched to keep it off the per-step cost: the scores since the last check are kept
    (references only, at most ``check_every`` of them and ~16 MiB), and every ``check_every`` calls
    one reduction over the latest score decides. A NaN or inf never leaves the state once it is in
    (every update adds the score to it) and a score of a non-finite state is non-finite, so a clean
    latest score means a clean window; a dirty one is scanned for the first bad score, which the
    error names. Sampling therefore stops at most ``check_every - 1`` evaluations after the first
    NaN, with the exact step and time. :meth:`check` flushes the window and also checks a state (the
    samplers call it on their final state, which catches a score that hides a non-finite input).
    """

    _WINDOW_BYTES = 16 << 20

    def __init__(self, score_fn: ScoreFn, check_finite: bool = True, check_every: int = 16):
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.score_fn = score_fn
        self.check_finite = check_finite
        self.check_every = int(check_every)
        self.nfe = 0
        self.step: int | str = "?"
        self._window: list = []  # (step, t, score) of the calls since the last check
        self._limit = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        s = self.score_fn(x, t)
        if self.check_finite:
            window = self._window
            window.append((self.step, t, s))
            if len(window) >= self._limit:
                if not self._limit:  # first call: size the window by the score's bytes
                    self._limit = max(1, min(self.check_every, self._WINDOW_BYTES // max(1, s.nbytes)))
                if len(window) >= self._limit:
                    self.check()
        return s

    def check(self, state: torch.Tensor | None = None) -> None:
        """Raise :class:`SamplingError` if a score since the last check (or ``state``) is not finite."""
        window, self._window = self._window, []
        if not self.check_finite:
            return
        if (not window or _finite(window[-1][2])) and (state is None or _finite(state)):
            return
        for step, t, s in window:
            if not _finite(s):
                raise SamplingError(
                    f"the score became NaN/inf at step {step}, t = {float(t.reshape(-1)[0]):.6g}. "
                    "Try more steps, a smaller snr, or check the model."
                )
        raise SamplingError("the state became NaN/inf while the score stayed finite (found at the end of "
                            "sampling). Try more steps, a smaller snr, or check the model.")


def _finite(v: torch.Tensor) -> bool:
    """All entries finite. Fast path: one reduction (a NaN/inf anywhere makes the sum non-finite);
    only a non-finite sum, which a huge but finite state could also give, is confirmed entry-wise."""
    v = v.detach()
    return math.isfinite(float(v.sum())) or bool(torch.isfinite(v).all())


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
        denoise: finish with one Tweedie denoising step at ``eps`` (:func:`tweedie_denoise`).
        check_finite: stop with :class:`SamplingError` at the first NaN/inf score.
    """

    def __init__(self, eps: float | None = None, denoise: bool = False, check_finite: bool = True):
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
