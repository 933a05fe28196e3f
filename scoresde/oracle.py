"""Exact oracle: a Gaussian mixture diffused by any of our SDEs.

If ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` and the SDE has the kernel ``N(m(t) x_0, s(t)^2 I)``, then

    p_t(x) = sum_k w_k N(x; m(t) mu_k, C_k(t)),   C_k(t) = m(t)^2 Sigma_k + s(t)^2 I,

so the marginal, its log-density and its score are closed-form for every ``t``:

    grad log p_t(x) = sum_k r_k(x) (-C_k(t)^-1 (x - m(t) mu_k)),   r_k = softmax_k(log w_k + log N_k).

With ``Sigma_k = U_k diag(lambda_k) U_k^T`` (computed once), ``C_k(t) = U_k diag(m^2 lambda_k + s^2) U_k^T``:
no matrix is factorised per time. All arithmetic is float64; results come back in the input's dtype.

Use it to benchmark solvers without training (``GaussianMixture.score_fn(sde)``) and as the
reference of our correctness tests (samplers, likelihood, losses).
"""

from __future__ import annotations

import math

import torch

from .sde import SDE, _as_time

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """Mixture ``sum_k w_k N(mu_k, Sigma_k)`` with full covariances.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, *event_shape)``; data may be vectors (``event_shape = (D,)``) or images.
        covs: ``(K, D, D)`` symmetric positive-definite covariances over the flattened event,
            ``D = prod(event_shape)``.
    """

    def __init__(self, weights, means, covs):
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if w.dim() != 1 or w.numel() < 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(w.shape)}")
        k = w.numel()
        if mu.dim() < 2 or mu.shape[0] != k:
            raise ValueError(f"means must have shape (K={k}, *event_shape), got {tuple(mu.shape)}")
        d = mu[0].numel()
        if tuple(cov.shape) != (k, d, d):
            raise ValueError(f"covs must have shape (K={k}, D={d}, D={d}), got {tuple(cov.shape)}")
        if not (torch.isfinite(w).all() and torch.isfinite(mu).all() and torch.isfinite(cov).all()):
            raise ValueError("weights, means and covs must be finite")
        if (w <= 0).any():
            raise ValueError("mixture weights must be positive")
        if not torch.allclose(cov, cov.transpose(1, 2), rtol=1e-8, atol=1e-10):
            raise ValueError("covariances must be symmetric")
        evals, evecs = torch.linalg.eigh(cov)
        if (evals <= 0).any():
            smallest = float(evals.min())
            raise ValueError(f"covariances must be positive definite (smallest eigenvalue {smallest:.3g})")
        self.event_shape = tuple(mu.shape[1:])
        self.dim = d
        self.weights = w / w.sum()
        self.means = mu.reshape(k, d)
        self.covs = cov
        self.evals = evals  # (K, D)
        self.evecs = evecs  # (K, D, D), columns are eigenvectors
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def num_components(self) -> int:
        return self.weights.numel()

    @classmethod
    def random(cls, dim: int, num_components: int = 3, *, std_range: tuple[float, float] = (0.1, 0.6),
               spread: float = 1.5, seed: int = 0) -> GaussianMixture:
        """A reproducible non-isotropic mixture in ``dim`` dimensions: random rotations, component
        standard deviations in ``std_range``, means ``N(0, spread^2 I)``, unequal weights."""
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(num_components, dim, generator=g, dtype=torch.float64)
        covs = []
        for _ in range(num_components):
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
            lo, hi = std_range
            stds = lo + (hi - lo) * torch.rand(dim, generator=g, dtype=torch.float64)
            covs.append(q @ torch.diag(stds**2) @ q.T)
        covs = torch.stack(covs)
        covs = 0.5 * (covs + covs.transpose(1, 2))
        weights = 1.0 + torch.rand(num_components, generator=g, dtype=torch.float64) * 2.0
        return cls(weights, means, covs)

    # ------------------------------------------------------------------------------------------
    def _params(self, device: torch.device):
        if device not in self._cache:
            self._cache[device] = tuple(
                p.to(device) for p in (self.weights.log(), self.means, self.evals, self.evecs)
            )
        return self._cache[device]

    def _coefs(self, t, sde: SDE, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(_as_time(t), dtype=torch.float64, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        elif t.shape[0] != batch:
            raise ValueError(f"t has {t.shape[0]} entries for a batch of {batch}")
        return sde.mean_coef(t), sde.std(t)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x has per-example shape {tuple(x.shape[1:])}, "
                f"the mixture's event shape is {self.event_shape}"
            )
        return x.reshape(x.shape[0], -1).to(torch.float64)

    def _components(self, x: torch.Tensor, t, sde: SDE):
        """Per-component whitened coordinates ``y`` (B,K,D), variances (B,K,D), log N_k (B,K)."""
        xf = self._flatten(x)
        log_w, mu, evals, evecs = self._params(xf.device)
        m, s = self._coefs(t, sde, xf.shape[0], xf.device)
        diff = xf[:, None, :] - m[:, None, None] * mu[None]  # (B, K, D)
        y = torch.einsum("bkd,kde->bke", diff, evecs)  # U_k^T (x - m mu_k)
        var = m[:, None, None] ** 2 * evals[None] + s[:, None, None] ** 2  # (B, K, D)
        log_n = -0.5 * ((y**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return y, var, log_w[None] + log_n

    # --- public API ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, t, sde: SDE) -> torch.Tensor:
        """``log p_t(x)`` in nats, shape ``(B,)``."""
        _, _, joint = self._components(x, t, sde)
        return torch.logsumexp(joint, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, t, sde: SDE) -> torch.Tensor:
        """``grad_x log p_t(x)``, shaped like ``x``."""
        y, var, joint = self._components(x, t, sde)
        resp = torch.softmax(joint, dim=1)  # (B, K)
        evecs = self._params(y.device)[3]
        comp = -torch.einsum("bke,kde->bkd", y / var, evecs)  # -C_k^-1 (x - m mu_k)
        return (resp[..., None] * comp).sum(1).reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: SDE):
        """A plain ``score_fn(x, t)`` of the diffused mixture, for solvers and likelihood."""

        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.score(x, t, sde)

        return score_fn

    def sample(self, n: int, t, sde: SDE, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32, return_components: bool = False):
        """``n`` exact draws of ``p_t`` (shape ``(n, *event_shape)``), on the CPU."""
        log_w, mu, evals, evecs = self._params(torch.device("cpu"))
        m, s = self._coefs(t, sde, n, torch.device("cpu"))
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        std = torch.sqrt(m[:, None] ** 2 * evals[k] + s[:, None] ** 2)  # (n, D)
        x = m[:, None] * mu[k] + torch.einsum("nde,ne->nd", evecs[k], std * z)
        x = x.reshape(n, *self.event_shape).to(dtype)
        return (x, k) if return_components else x

    def moments(self, t, sde: SDE) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(D,)`` and covariance ``(D, D)`` of ``p_t`` (float64), for a scalar ``t``."""
        m, s = self._coefs(t, sde, 1, torch.device("cpu"))
        m, s = m[0], s[0]
        w = self.weights
        means = m * self.means
        covs = m**2 * self.covs + s**2 * torch.eye(self.dim, dtype=torch.float64)
        mean = (w[:, None] * means).sum(0)
        second = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    def responsibilities(self, x: torch.Tensor, t, sde: SDE) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)`` at time ``t``, shape ``(B, K)``."""
        _, _, joint = self._components(x, t, sde)
        return torch.softmax(joint, dim=1)

    def prior_kl(self, sde: SDE, num_samples: int = 200_000,
                 generator: torch.Generator | None = None) -> tuple[float, float]:
        """``KL(p_T || pi)`` in nats between the diffused mixture at ``T`` and the SDE's prior
        ``pi = N(0, prior_std^2 I)``: ``E_{p_T}[log p_T - log pi]``, averaged over ``num_samples`` exact draws
        with the exact densities (a mixture has no closed-form entropy). Returns ``(kl, standard error)``."""
        x = self.sample(num_samples, sde.T, sde, generator=generator, dtype=torch.float64)
        ratio = self.log_prob(x, sde.T, sde) - sde.prior_logp(x)
        return float(ratio.mean()), float(ratio.std() / math.sqrt(num_samples))

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, event_shape={self.event_shape})"
