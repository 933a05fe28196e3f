"""Exact oracle: a Gaussian mixture diffused by any of our SDEs.

If ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` and the SDE has the kernel ``N(m(t) x_0, s(t)^2 I)``, then

    p_t(x) = sum_k w_k N(x; m(t) mu_k, C_k(t)),   C_k(t) = m(t)^2 Sigma_k + s(t)^2 I,

so the marginal, its log-density and its score are closed-form for every ``t``:

    grad log p_t(x) = sum_k r_k(x) (-C_k(t)^-1 (x - m(t) mu_k)),   r_k = softmax_k(log w_k + log N_k).

With ``Sigma_k = U_k diag(lambda_k) U_k^T`` (computed once), ``C_k(t) = U_k diag(m^2 lambda_k + s^2) U_k^T``:
no matrix is factorised per time. All arithmetic is float64; results come back in the input's dtype.

Use it to benchmark solvers without training (``GaussianMixture.score_fn(sde)``) and as the
reference of our correctness tests (samplers, likelihood, losses).

Controllable generation (:mod:`scoresde.conditional`) is checked against three more closed forms:

* the exact time-dependent classifier ``p_t(k | x) = r_k(x)`` (:meth:`GaussianMixture.classifier_fn`
  gives its logits ``log w_k + log N_k``) and the class-conditional score ``grad log p_t(x | k)``, the
  score of component ``k`` alone (:meth:`GaussianMixture.class_score_fn`, :meth:`GaussianMixture.component`);
* ``p_t`` itself as a mixture (:meth:`GaussianMixture.diffused`), a linear map of the data
  (:meth:`GaussianMixture.transformed`: ``A x`` is a mixture with means ``A mu_k``, covariances
  ``A Sigma_k A^T``);
* the conditional ``p(x_u | x_o = y)`` of known coordinates ``o`` (:meth:`GaussianMixture.condition`):
  a mixture of the Gaussian conditionals

      mu_k|y = mu_k,u + S_k,uo S_k,oo^-1 (y - mu_k,o),   S_k|y = S_k,uu - S_k,uo S_k,oo^-1 S_k,ou,

  reweighted ``w_k|y ∝ w_k N(y; mu_k,o, S_k,oo)``;
* the posterior ``p(x | y)`` of a linear-Gaussian measurement ``y = A x + sigma_y n``
  (:meth:`GaussianMixture.posterior`, for :mod:`scoresde.restoration`): a mixture of the Gaussian
  posteriors (Kalman updates) reweighted by each component's evidence
  ``N(y; A mu_k, A Sigma_k A^T + sigma_y^2 I)``.
"""

from __future__ import annotations

import math

import torch

from .sde import SDE, as_time

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """Mixture ``sum_k w_k N(mu_k, Sigma_k)`` with full covariances.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, *event_shape)``; data may be vectors (``event_shape = (D,)``) or images.
        covs: ``(K, D, D)`` symmetric positive-definite covariances over the flattened event,
            ``D = prod(event_shape)``.
        allow_singular: accept positive semi-definite covariances (a mixture on an affine subspace, e.g. the
            posterior of a noiseless measurement, :meth:`posterior`): :meth:`sample`, :meth:`moments` and
            everything at ``t > 0`` work; densities and scores at ``t = 0`` do not exist there.
    """

    def __init__(self, weights, means, covs, *, allow_singular: bool = False):
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
        if allow_singular:
            evals = evals.clamp_min(0.0)
        elif (evals <= 0).any():
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
        t = torch.as_tensor(as_time(t), dtype=torch.float64, device=device)
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
        comp, resp = self._component_scores(x, t, sde)
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

    # --- controllable generation: classifier, class-conditional scores, conditionals -------------
    def classifier_fn(self, sde: SDE):
        """The exact noise-conditional classifier: ``logits_fn(x, t) -> (B, K)`` with
        ``softmax(logits) = p_t(k | x) = r_k(x)`` (the logits are ``log w_k + log N_k(x; t)``).
        Differentiable in ``x``; ``logits_fn.num_classes = K``."""

        def logits_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._components(x, t, sde)[2].to(x.dtype)

        logits_fn.num_classes = self.num_components
        return logits_fn

    def class_score_fn(self, sde: SDE, null_label: int | None = None):
        """The exact class-conditional score ``score_fn(x, t, y) = grad log p_t(x | k = y)``, the
        score of component ``y`` alone; rows with ``y == null_label`` get the unconditional score
        ``grad log p_t(x)`` (what a classifier-free model learns for its null label)."""

        def score_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            y = torch.as_tensor(y, device=x.device).expand(x.shape[0])
            comp, resp = self._component_scores(x, t, sde)
            null = (y == null_label) if null_label is not None else torch.zeros_like(y, dtype=torch.bool)
            if ((y < 0) | (y >= self.num_components))[~null].any():
                raise ValueError(f"labels must lie in [0, {self.num_components}) or be the null label")
            k = torch.where(null, 0, y)
            out = comp[torch.arange(x.shape[0], device=x.device), k]
            out = torch.where(null[:, None], (resp[..., None] * comp).sum(1), out)
            return out.reshape(x.shape).to(x.dtype)

        return score_fn

    def _component_scores(self, x: torch.Tensor, t, sde: SDE) -> tuple[torch.Tensor, torch.Tensor]:
        """``-C_k^-1 (x - m mu_k)`` per component (B, K, D) and the responsibilities (B, K)."""
        y, var, joint = self._components(x, t, sde)
        comp = -torch.einsum("bke,kde->bkd", y / var, self._params(y.device)[3])
        return comp, torch.softmax(joint, dim=1)

    def component(self, k: int) -> GaussianMixture:
        """Component ``k`` alone, as a one-component mixture (exact draws of class ``k``)."""
        if not 0 <= int(k) < self.num_components:
            raise ValueError(f"component {k} outside [0, {self.num_components})")
        k = int(k)
        return GaussianMixture([1.0], self.means[k:k + 1].reshape(1, *self.event_shape), self.covs[k:k + 1])

    def diffused(self, t: float, sde: SDE) -> GaussianMixture:
        """``p_t`` as a mixture: means ``m(t) mu_k``, covariances ``m(t)^2 Sigma_k + s(t)^2 I``."""
        m, s = float(sde.mean_coef(float(t))), float(sde.std(float(t)))
        covs = m**2 * self.covs + s**2 * torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, m * self.means.reshape(-1, *self.event_shape), covs)

    def transformed(self, matrix: torch.Tensor) -> GaussianMixture:
        """The law of ``A x`` for an invertible ``(D, D)`` matrix ``A`` acting on the flattened event:
        means ``A mu_k``, covariances ``A Sigma_k A^T``; same event shape."""
        a = torch.as_tensor(matrix, dtype=torch.float64)
        if tuple(a.shape) != (self.dim, self.dim):
            raise ValueError(f"matrix must have shape ({self.dim}, {self.dim}), got {tuple(a.shape)}")
        covs = a @ self.covs @ a.T
        means = (self.means @ a.T).reshape(-1, *self.event_shape)
        return GaussianMixture(self.weights, means, 0.5 * (covs + covs.transpose(1, 2)))

    def condition(self, values: torch.Tensor, mask: torch.Tensor) -> GaussianMixture:
        """The exact conditional ``p(x_u | x_o = y)`` with ``o`` the coordinates where ``mask`` is
        True (``values`` and ``mask`` event-shaped; values at unknown coordinates are ignored): a
        mixture over the ``D_u`` unknown coordinates (event shape ``(D_u,)``, in flattened order) of
        the Gaussian conditionals, reweighted by each component's evidence ``N(y; mu_k,o, S_k,oo)``."""
        mask = torch.as_tensor(mask, dtype=torch.bool).expand(self.event_shape).reshape(-1)
        y = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if y.numel() != self.dim:
            raise ValueError(f"values must have the event shape {self.event_shape}")
        if mask.all() or not mask.any():
            raise ValueError("mask must mark some but not all coordinates as known")
        o, u = mask.nonzero()[:, 0], (~mask).nonzero()[:, 0]
        cov, mu = self.covs, self.means
        s_oo, s_uo, s_uu = cov[:, o][:, :, o], cov[:, u][:, :, o], cov[:, u][:, :, u]
        chol = torch.linalg.cholesky(s_oo)  # (K, O, O)
        diff = (y[o] - mu[:, o])[..., None]  # (K, O, 1)
        gain = torch.cholesky_solve(s_uo.transpose(1, 2), chol).transpose(1, 2)  # S_uo S_oo^-1
        means = mu[:, u] + (gain @ diff)[..., 0]
        covs = s_uu - gain @ s_uo.transpose(1, 2)
        white = torch.linalg.solve_triangular(chol, diff, upper=False)[..., 0]
        log_evidence = -0.5 * ((white**2).sum(-1) + 2 * chol.diagonal(dim1=1, dim2=2).log().sum(-1)
                               + o.numel() * math.log(2 * math.pi))
        weights = torch.softmax(self.weights.log() + log_evidence, dim=0)
        return GaussianMixture(weights.clamp_min(1e-300), means, 0.5 * (covs + covs.transpose(1, 2)))

    def posterior(self, operator, y, sigma_y: float) -> GaussianMixture:
        """The exact posterior ``p(x | y)`` of this mixture as the prior under the linear-Gaussian measurement
        ``y = A x + sigma_y n``, ``n ~ N(0, I)``: again a mixture. ``operator`` is an ``(M, D)`` matrix or
        anything with a ``matrix()`` method (a :class:`scoresde.restoration.LinearOperator`); ``y`` has ``M``
        values (any shape).

        In the SVD ``A = U diag(S) V^T`` only the ``r`` coordinates ``ybar = (U^T y)_{1:r}`` depend on ``x``
        (the other ``M - r`` are noise alone, the same factor for every component), so with the full-row-rank
        ``B = diag(S) V_r^T`` (``r x D``), per component

            G_k = B Sigma_k B^T + sigma_y^2 I_r,       K_k = Sigma_k B^T G_k^-1,
            mu_k|y = mu_k + K_k (ybar - B mu_k),        Sigma_k|y = Sigma_k - K_k B Sigma_k,
            w_k|y ∝ w_k N(ybar; B mu_k, G_k).

        ``G_k`` is positive definite for every ``sigma_y >= 0`` (``Sigma_k`` is), so a rank-deficient
        ``A`` and ``sigma_y = 0`` are handled; at ``sigma_y = 0`` the covariances are singular (the
        posterior lies on ``{x : A x = y}``): the mixture is built with ``allow_singular=True``."""
        a = operator.matrix() if hasattr(operator, "matrix") else operator
        a = torch.as_tensor(a, dtype=torch.float64)
        if a.dim() != 2 or a.shape[1] != self.dim:
            raise ValueError(f"the operator must be an (M, D={self.dim}) matrix, got shape {tuple(a.shape)}")
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if y.numel() != a.shape[0]:
            raise ValueError(f"y has {y.numel()} values but the operator measures {a.shape[0]}")
        if not float(sigma_y) >= 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        r = int((s > 1e-12 * s.max()).sum()) if s.numel() else 0
        if r == 0:
            return self
        b = s[:r, None] * vh[:r]  # (r, D)
        ybar = u[:, :r].T @ y
        cov, mu = self.covs, self.means
        g = b @ cov @ b.T + float(sigma_y) ** 2 * torch.eye(r, dtype=torch.float64)  # (K, r, r)
        chol = torch.linalg.cholesky(0.5 * (g + g.transpose(1, 2)))
        cross = cov @ b.T  # Sigma_k B^T, (K, D, r)
        gain = torch.cholesky_solve(cross.transpose(1, 2), chol).transpose(1, 2)  # (K, D, r)
        diff = (ybar - mu @ b.T)[..., None]  # (K, r, 1)
        means = mu + (gain @ diff)[..., 0]
        covs = cov - gain @ cross.transpose(1, 2)
        white = torch.linalg.solve_triangular(chol, diff, upper=False)[..., 0]
        log_evidence = -0.5 * ((white**2).sum(-1) + 2 * chol.diagonal(dim1=1, dim2=2).log().sum(-1)
                               + r * math.log(2 * math.pi))
        weights = torch.softmax(self.weights.log() + log_evidence, dim=0)
        return GaussianMixture(weights.clamp_min(1e-300), means.reshape(-1, *self.event_shape),
                               0.5 * (covs + covs.transpose(1, 2)), allow_singular=float(sigma_y) == 0)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, event_shape={self.event_shape})"
