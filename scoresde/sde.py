"""The forward SDEs of Song et al. (2021), ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]``, ``T = 1``.

All three SDEs here have an affine drift ``f(x, t) = a(t) x`` (``a`` = :meth:`SDE.drift_coef`), so the
perturbation kernel is Gaussian and closed-form:

    p_0t(x_t | x_0) = N(x_t; m(t) x_0, s(t)^2 I),   m(t) = exp(int_0^t a),
    dm/dt = a(t) m(t),   d s^2/dt = 2 a(t) s(t)^2 + g(t)^2.

Every method is batched over a time tensor ``t`` of shape ``(B,)`` (a 0-d tensor is broadcast) and
data of any rank ``(B, ...)``: vectors ``(B, D)`` and images ``(B, C, H, W)`` alike. A Python number
``t`` (one time for the whole batch, as in the samplers) becomes a 0-d float64 tensor, so every
coefficient is a tensor and every formula is written once.

Numerics: the VP and sub-VP standard deviations are computed with ``expm1`` from the log mean
coefficient, so they stay accurate at ``t = 1e-5`` in float32 (the reference code loses ~1% there).
"""

from __future__ import annotations

import abc
import math

import torch

__all__ = ["SDE", "CosineVPSDE", "SubVPSDE", "VESDE", "VPSDE", "as_time", "expand_to"]


def expand_to(v, x: torch.Tensor):
    """View a per-example tensor ``v`` of shape ``(B,)`` (or a 0-d tensor, or a float) so that it
    broadcasts against ``x`` of shape ``(B, ...)``."""
    if not isinstance(v, torch.Tensor) or v.dim() == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def as_time(t) -> torch.Tensor:
    """Times as a float tensor: ``(B,)``, or 0-d (float64) for a Python number; the time argument every
    SDE method (and the oracle) accepts."""
    if not isinstance(t, torch.Tensor):
        return torch.tensor(float(t), dtype=torch.float64)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dim() > 1:
        raise ValueError(f"t must have shape (B,) or be a scalar, got shape {tuple(t.shape)}")
    return t


def _as_log_snr(lam) -> tuple[torch.Tensor, torch.dtype]:
    """Log-SNR values as float64 and the dtype to return them in (float64 for a Python number)."""
    if not isinstance(lam, torch.Tensor):
        return torch.as_tensor(lam, dtype=torch.float64), torch.float64
    dtype = lam.dtype if lam.is_floating_point() else torch.float64
    return lam.to(torch.float64), dtype


def _check_batch(x: torch.Tensor, t: torch.Tensor) -> None:
    if t.dim() == 1 and x.dim() >= 1 and t.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"time tensor t has {t.shape[0]} entries but the data batch has {x.shape[0]} examples; "
            "pass one time per example (shape (B,)) or a scalar"
        )


class SDE(abc.ABC):
    """A forward SDE ``dx = a(t) x dt + g(t) dw`` with a Gaussian perturbation kernel.

    Subclasses define :meth:`log_mean_coef` (``log m(t)``), :meth:`drift_coef` (``a(t)``),
    :meth:`std` (``s(t)``), :meth:`diffusion` (``g(t)``), the prior's standard deviation
    ``prior_std`` and :meth:`noise_label` (what a network is conditioned on). Everything else
    (marginal, prior, reverse drift, discretisations) is derived here once.
    """

    #: terminal time
    T: float = 1.0
    #: the paper's default smallest time of sampling (solvers stop there): 1e-3 (VP, sub-VP), 1e-5 (VE)
    sampling_eps: float = 1e-3
    #: the paper's smallest training/likelihood time
    train_eps: float = 1e-5
    #: standard deviation of the isotropic Gaussian prior p_T
    prior_std: float = 1.0

    # --- coefficients (per time, shape (B,)) --------------------------------------------------
    @abc.abstractmethod
    def log_mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``log m(t)``, the log of the mean scale of the perturbation kernel."""

    @abc.abstractmethod
    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``a(t)`` with ``f(x, t) = a(t) x``."""

    @abc.abstractmethod
    def std(self, t: torch.Tensor) -> torch.Tensor:
        """``s(t)``, the standard deviation of the perturbation kernel."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)``, shape ``(B,)``."""

    @abc.abstractmethod
    def noise_label(self, t: torch.Tensor) -> torch.Tensor:
        """What a score network is conditioned on at time ``t`` (shape ``(B,)``)."""

    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``m(t) = exp(log m(t))``."""
        return torch.exp(self.log_mean_coef(as_time(t)))

    # --- the SDE ------------------------------------------------------------------------------
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x, t) = a(t) x``."""
        t = as_time(t)
        _check_batch(x, t)
        return expand_to(self.drift_coef(t), x) * x

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbation kernel ``p_0t(x_t | x_0) = N(mean, std^2 I)``: returns ``(m(t) x0, s(t))``
        with ``std`` of shape ``(B,)`` (0-d for a scalar ``t``)."""
        t = as_time(t)
        _check_batch(x0, t)
        return expand_to(self.mean_coef(t), x0) * x0, self.std(t)

    def marginal_sample(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``x_t = m(t) x0 + s(t) z``; returns ``(x_t, z, std)``."""
        mean, std = self.marginal(x0, t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + expand_to(std, x0) * noise, noise, std

    # --- prior -------------------------------------------------------------------------------
    def prior_sample(
        self, shape, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """A draw from the prior ``p_T = N(0, prior_std^2 I)`` of the given shape ``(B, ...)``."""
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, prior_std^2 I)`` per example, in nats, shape ``(B,)``."""
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
        var = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * var) - sq / (2 * var)

    # --- reverse time ------------------------------------------------------------------------
    def reverse_drift(
        self, x: torch.Tensor, t: torch.Tensor | float, score: torch.Tensor, probability_flow: bool = False
    ) -> torch.Tensor:
        """Drift of the reverse-time SDE, ``f - g^2 score`` (Song et al. eq. 6), or of the
        probability-flow ODE, ``f - g^2 score / 2`` (eq. 13), at time ``t``; in backward time
        ``dx = reverse_drift dt`` with ``dt < 0`` (plus ``g dw`` for the SDE). Every sampler uses this
        one formula."""
        t = as_time(t)
        f = self.drift(x, t)
        g2 = expand_to(self.diffusion(t) ** 2, x)
        if probability_flow:
            return f - 0.5 * g2 * score
        return f - g2 * score

    # --- discretisations ----------------------------------------------------------------------
    def transition(self, t: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact forward transition from ``s = t - dt`` to ``t``: ``x_t = r x_s + q z`` with
        ``r = m(t)/m(s)`` and ``q^2 = s(t)^2 - r^2 s(s)^2``. Returns ``(r, q)``, each like ``t``.

        It is the forward discretisation ``x_t = x_s + f + G z`` of the reverse-diffusion predictor
        (Song et al. eq. 46-47) with ``f = (r - 1) x_s`` and ``G = q``: for VP DDPM's ``sqrt(1 - beta_i)``
        and ``sqrt(beta_i)`` (``1 - beta_i = m(t)^2 / m(s)^2``), for VE SMLD's
        ``sqrt(sigma_i^2 - sigma_{i-1}^2)``, and an exact transition for sub-VP too (the reference code
        falls back to Euler there).

        Computed in float64 (the difference of nearby variances cancels in float32)."""
        t = as_time(t)
        t64 = t.double()
        s64 = (t64 - dt).clamp_min(0.0)
        log_r = self.log_mean_coef(t64) - self.log_mean_coef(s64)
        r = torch.exp(log_r)
        q2 = self.std(t64) ** 2 - r**2 * self.std(s64) ** 2
        return r.to(t.dtype), q2.clamp_min(0.0).sqrt().to(t.dtype)

    def langevin_alpha(self, t: torch.Tensor, dt) -> torch.Tensor:
        """Signal scale ``alpha_i`` of the Langevin corrector (Song et al. Algorithm 5): the per-step
        signal retention ``(m(t)/m(t - dt))^2``. It is ``1 - beta_i`` for VP (what the reference uses),
        ``1`` for VE, and well defined for sub-VP too (where the reference crashes)."""
        r, _ = self.transition(t, dt)
        return r * r

    # --- the half log signal-to-noise ratio -----------------------------------------------------
    def log_snr(self, t) -> torch.Tensor:
        """``lambda(t) = log m(t) - log s(t)``, the half log signal-to-noise ratio of the kernel: the
        variable of the exponential integrators (DDIM, DPM-Solver, UniPC). It decreases from ``+inf`` at
        ``t = 0``: ``d lambda / dt = -g(t)^2 / (2 s(t)^2)`` (from ``d s^2/dt = 2 a s^2 + g^2``)."""
        t = as_time(t)
        return self.log_mean_coef(t) - torch.log(self.std(t))

    def time_at_log_snr(self, lam) -> torch.Tensor:
        """The time ``t`` with ``lambda(t) = lam`` (``lam = +inf`` gives ``t = 0``), elementwise, computed in
        float64 and returned in ``lam``'s dtype (float64 for a Python number).

        Here for any SDE: bisection on the monotone ``lambda``, bracket ``[0, T]`` (widened past ``T`` by
        doubling for ``lam < lambda(T)``, e.g. EDM's churn above the prior's noise level), run until every
        bracket is as narrow as float64 allows (about 60 + log2(1/t) halvings). VP, sub-VP and VE override
        it with their closed forms; a subclass that changes their schedule gets this one back."""
        lam64, dtype = _as_log_snr(lam)
        if bool(torch.isnan(lam64).any()):
            raise ValueError(f"time_at_log_snr got NaN log-SNR values for {self!r}")
        done = torch.isposinf(lam64)  # t = 0
        lo, hi = torch.zeros_like(lam64), torch.full_like(lam64, float(self.T)).masked_fill(done, 0.0)
        for _ in range(64):
            short = self.log_snr(hi) > lam64  # lambda(hi) still above lam: the root lies beyond hi
            if not bool(short.any()):
                break
            lo, hi = torch.where(short, hi, lo), torch.where(short, 2.0 * hi, hi)
        else:
            raise ValueError(f"log-SNR {float(lam64.min()):.6g} is below lambda(t) for every t up to "
                             f"{float(hi.max()):.3g} of {self!r}: no time has it")
        for _ in range(1100):  # float64's 52 bits below the smallest normal number: always enough
            mid = 0.5 * (lo + hi)
            if bool(((mid <= lo) | (mid >= hi)).all()):
                break
            above = self.log_snr(mid) > lam64  # lambda decreases: the root lies after mid
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return hi.to(dtype)

    def _closed_form_holds(self, cls: type) -> bool:
        """Whether the kernel methods of ``cls``, whose closed-form inverse ``t(lambda)`` is used, are still
        this object's (a subclass with another schedule overrides them and falls back to the bisection)."""
        names = ("log_mean_coef", "std", "log_snr", "sigma", "beta")
        return all(getattr(type(self), n, None) is getattr(cls, n, None) for n in names)

    # --- misc ---------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


class _BetaSchedule(SDE):
    """Shared linear ``beta(t) = b0 + t (b1 - b0)`` of VP and sub-VP."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (beta_min > 0 and beta_max > beta_min):
            raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``beta(t) = beta_min + t (beta_max - beta_min)``."""
        return self.beta_min + as_time(t) * (self.beta_max - self.beta_min)

    def log_mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``log m(t) = -t^2 (b1 - b0) / 4 - t b0 / 2``."""
        t = as_time(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``a(t) = -beta(t) / 2``."""
        return -0.5 * self.beta(t)

    def time_at_log_mean_coef(self, log_m: torch.Tensor) -> torch.Tensor:
        """The root ``t >= 0`` of ``log m(t) = log_m`` (``<= 0``), i.e. of ``A t^2 + B t + c = 0`` with
        ``A = (b1 - b0) / 4``, ``B = b0 / 2``, ``c = -log_m``, as ``2 c / (B + sqrt(B^2 + 4 A c))`` (no
        cancellation at small ``t``)."""
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return -2.0 * log_m / (b + torch.sqrt(b * b - 4.0 * a * log_m))

    def noise_label(self, t: torch.Tensor) -> torch.Tensor:
        """``999 t``, the paper's continuous-time label (a DDPM timestep scale)."""
        return 999.0 * as_time(t)

    def _config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


class VPSDE(_BetaSchedule):
    """Variance-preserving SDE: ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``.

    Kernel: ``m(t) = exp(-t^2 (b1-b0)/4 - t b0/2)``, ``s(t) = sqrt(1 - m(t)^2)``; prior ``N(0, I)``.
    """

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """``s(t) = sqrt(1 - m(t)^2) = sqrt(-expm1(2 log m(t)))``."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coef(as_time(t))))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sqrt(beta(t))``."""
        return torch.sqrt(self.beta(t))

    def time_at_log_snr(self, lam) -> torch.Tensor:
        """Closed form: ``m^2 = 1 / (1 + e^{-2 lambda})``, so ``log m = -log(1 + e^{-2 lambda}) / 2``, then
        :meth:`time_at_log_mean_coef`."""
        if not self._closed_form_holds(VPSDE):
            return super().time_at_log_snr(lam)
        lam64, dtype = _as_log_snr(lam)
        log_m = -0.5 * torch.logaddexp(torch.zeros_like(lam64), -2.0 * lam64)
        return self.time_at_log_mean_coef(log_m).to(dtype)


class SubVPSDE(_BetaSchedule):
    """Sub-VP SDE: ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw``.

    Kernel: ``m(t)`` as VP, ``s(t) = 1 - m(t)^2`` (the VP *variance*: its variance is bounded by the
    VP one); prior ``N(0, I)``.
    """

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """``s(t) = 1 - m(t)^2 = -expm1(2 log m(t))``."""
        return -torch.expm1(2.0 * self.log_mean_coef(as_time(t)))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sqrt(beta(t) (1 - m(t)^4)) = sqrt(-beta(t) expm1(4 log m(t)))``."""
        return torch.sqrt(-self.beta(t) * torch.expm1(4.0 * self.log_mean_coef(as_time(t))))

    def time_at_log_snr(self, lam) -> torch.Tensor:
        """Closed form: ``s = 1 - m^2`` makes ``m = e^lambda (1 - m^2)``, whose root is
        ``log m = -asinh(e^{-lambda} / 2)``, then :meth:`time_at_log_mean_coef`."""
        if not self._closed_form_holds(SubVPSDE):
            return super().time_at_log_snr(lam)
        lam64, dtype = _as_log_snr(lam)
        return self.time_at_log_mean_coef(-torch.asinh(0.5 * torch.exp(-lam64))).to(dtype)


class CosineVPSDE(SDE):
    """Variance-preserving SDE of the cosine schedule (Nichol & Dhariwal 2021, the continuous form of
    diffusers' ``squaredcos_cap_v2``): ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` with

        m(t) = cos(phi(t)) / cos(phi(0)),   phi(t) = pi/2 (t + s) / (1 + s),
        beta(t) = -2 d log m / dt = pi / (1 + s) tan(phi(t)),   s(t) = sqrt(1 - m(t)^2).

    ``m(1) = 0``, so the SDE stops at ``T < 1`` (default 0.9946, DPM-Solver's choice, where
    ``m(T)^2 ~ 7e-5``); prior ``N(0, I)``. The noise label is ``999 t``, as for the VP SDE.
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946):
        if not s > 0:
            raise ValueError(f"the cosine schedule's offset s must be > 0, got {s}")
        if not 0 < T < 1:
            raise ValueError(f"T must lie in (0, 1) for the cosine schedule (m(1) = 0), got {T}")
        self.s, self.T = float(s), float(T)

    def _phi(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * (as_time(t) + self.s) / (1.0 + self.s)

    def log_mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``log m(t) = log cos(phi(t)) - log cos(phi(0))``; for ``t < 1/2`` as
        ``log1p(-2 sin^2(d/2) - tan(phi(0)) sin d)``, ``d = phi(t) - phi(0)`` (no cancellation at small
        ``t``, accurate in float32)."""
        t = as_time(t)
        phi0 = 0.5 * math.pi * self.s / (1.0 + self.s)
        d = 0.5 * math.pi * t / (1.0 + self.s)
        small = torch.log1p(-2.0 * torch.sin(0.5 * d) ** 2 - math.tan(phi0) * torch.sin(d))
        large = torch.log(torch.cos(self._phi(t))) - math.log(math.cos(phi0))
        return torch.where(t < 0.5, small, large)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``beta(t) = pi / (1 + s) tan(phi(t))``."""
        return math.pi / (1.0 + self.s) * torch.tan(self._phi(t))

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``a(t) = -beta(t) / 2``."""
        return -0.5 * self.beta(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """``s(t) = sqrt(1 - m(t)^2) = sqrt(-expm1(2 log m(t)))``."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coef(t)))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sqrt(beta(t))``."""
        return torch.sqrt(self.beta(t))

    def noise_label(self, t: torch.Tensor) -> torch.Tensor:
        """``999 t``, the DDPM timestep scale (as :meth:`VPSDE.noise_label`)."""
        return 999.0 * as_time(t)

    def _config(self) -> dict:
        return {"s": self.s, "T": self.T}


class VESDE(SDE):
    """Variance-exploding SDE: ``dx = sqrt(d sigma^2(t) / dt) dw`` with
    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``,
    i.e. ``g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))``.

    Convention (as the paper's code): the kernel's std is ``s(t) = sigma(t)``, not
    ``sqrt(sigma(t)^2 - sigma_min^2)``: the data are taken to already carry ``N(0, sigma_min^2)``
    noise at ``t = 0``. Then ``d s^2/dt = g^2`` holds exactly; the final denoising step removes that
    ``sigma_min`` noise. Prior ``N(0, sigma_max^2 I)``.

    ``noise_label``: ``"sigma"`` (the paper's continuous NCSN++, whose Fourier embedding takes the log
    itself) or ``"log_sigma"`` (for networks that embed the label directly).
    """

    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, noise_label: str = "sigma"):
        if not (sigma_min > 0 and sigma_max > sigma_min):
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        if noise_label not in ("sigma", "log_sigma"):
            raise ValueError(f"unknown noise_label {noise_label!r}; valid: 'sigma', 'log_sigma'")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.label = noise_label
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.prior_std = self.sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * torch.exp(as_time(t) * self.log_ratio)

    def log_mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``log m(t) = 0`` (no drift)."""
        return as_time(t) * 0.0

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``a(t) = 0``."""
        return as_time(t) * 0.0

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """``s(t) = sigma(t)`` (see the class docstring for the convention)."""
        return self.sigma(t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))``."""
        return self.sigma(t) * math.sqrt(2.0 * self.log_ratio)

    def time_at_log_snr(self, lam) -> torch.Tensor:
        """Closed form: ``lambda = -log sigma(t)``, so ``t = (-lambda - log sigma_min) / log(sigma_max /
        sigma_min)``."""
        if not self._closed_form_holds(VESDE):
            return super().time_at_log_snr(lam)
        lam64, dtype = _as_log_snr(lam)
        return ((-lam64 - math.log(self.sigma_min)) / self.log_ratio).to(dtype)

    def noise_label(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma(t)`` or ``log sigma(t)`` according to ``noise_label``."""
        if self.label == "sigma":
            return self.sigma(t)
        return math.log(self.sigma_min) + as_time(t) * self.log_ratio

    def _config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "noise_label": self.label}

