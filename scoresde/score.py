"""From a network to a score function.

A score function is any callable ``score_fn(x, t) -> grad_x log p_t(x)`` with ``t`` of shape ``(B,)``;
solvers, losses and the likelihood use nothing else. :class:`NetworkScore` builds one from a network
``net(x, c)``, conditioned on the label ``c = sde.noise_label(t)`` (``999 t`` for VP/sub-VP,
``sigma(t)`` or ``log sigma(t)`` for VE), so networks stay SDE-agnostic.

Parameterizations:

* ``"eps"`` (default): the network predicts the noise ``z`` of ``x_t = m(t) x_0 + s(t) z`` and
  ``score = -eps_theta(x, c) / s(t)``;
* ``"score"``: the network output is the score itself (the paper's NCSN++ with
  ``scale_by_sigma=True``, whose raw output is divided by sigma inside the network).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .sde import SDE, expand_to

__all__ = ["NetworkScore", "ScoreFn", "PARAMETERIZATIONS"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PARAMETERIZATIONS = ("eps", "score")


class NetworkScore:
    """``score_fn(x, t)`` from a network: ``-net(x, c) / s(t)`` (eps) or ``net(x, c)`` (score)."""

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: SDE,
                 parameterization: str = "eps"):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {parameterization!r}; valid: {', '.join(PARAMETERIZATIONS)}"
            )
        self.net = net
        self.sde = sde
        self.parameterization = parameterization

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        elif t.dim() == 0:
            t = t.expand(x.shape[0])
        out = self.net(x, self.sde.noise_label(t))
        if out.shape != x.shape:
            raise ValueError(
                f"the network returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                "a score network must return a tensor shaped like its input"
            )
        if self.parameterization == "score":
            return out
        return -out / expand_to(self.sde.std(t), x)

    def __repr__(self) -> str:
        return f"NetworkScore({type(self.net).__name__}, {self.sde!r}, {self.parameterization!r})"
