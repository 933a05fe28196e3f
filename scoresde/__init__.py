"""scoresde: score-based generative modeling through stochastic differential equations.

The math layer (SDEs, score parameterization, losses, oracle, solvers, likelihood) depends only on
torch, torchsde, numpy and scipy, and is usable as a plain library.
"""

from .losses import DSMLoss, NonFiniteLossError, dsm_loss
from .oracle import GaussianMixture
from .score import NetworkScore
from .sde import SDE, VESDE, VPSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE",
    "NetworkScore", "DSMLoss", "NonFiniteLossError", "dsm_loss", "GaussianMixture",
]
