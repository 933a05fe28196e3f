"""Denoising score matching with the exact score of a Gaussian mixture, for each SDE."""

from __future__ import annotations

import torch

from ..losses import DSMLoss
from ..oracle import GaussianMixture
from ..sde import VESDE, VPSDE, SubVPSDE


def _scaled(score_fn, factor: float):
    return lambda x, t: factor * score_fn(x, t)


def oracle_demo(dim: int = 2, n: int = 20000, seed: int = 0) -> dict[str, float]:
    """Print, per SDE, the DSM loss of the exact score against a perturbed one (the exact score
    must win) and the oracle's log-density of data at t = 0. Returns the exact losses."""
    gm = GaussianMixture.random(dim, 3, seed=seed)
    losses = {}
    print(f"{'sde':<6} {'DSM loss (exact score)':>24} {'DSM loss (score x 0.9)':>24} {'mean log p_0':>14}")
    for name, cls in (("vp", VPSDE), ("subvp", SubVPSDE), ("ve", VESDE)):
        sde = cls()
        x0 = gm.sample(n, 0.0, sde, generator=torch.Generator().manual_seed(seed))
        exact = gm.score_fn(sde)
        loss = DSMLoss()
        l_exact = loss(exact, sde, x0, generator=torch.Generator().manual_seed(1)).item()
        worse = _scaled(exact, 0.9)
        l_bad = loss(worse, sde, x0, generator=torch.Generator().manual_seed(1)).item()
        logp = gm.log_prob(x0, 0.0, sde).mean().item()
        print(f"{name:<6} {l_exact:>24.4f} {l_bad:>24.4f} {logp:>14.4f}")
        losses[name] = l_exact
    return losses


if __name__ == "__main__":
    oracle_demo()
