"""Samplers of the reverse process: Euler-Maruyama (torchsde), predictor-corrector, and the
probability-flow ODE (scipy). Each is built from keyword arguments (its YAML config) and has
``sample(score_fn, sde, shape, *, generator=None, seeds=None, x_T=None, progress=False)`` and
``nfe``, the number of score evaluations of the last call."""

from .base import NoiseSource, Sampler, SamplingError, tweedie_denoise
from .ddim import DDIM
from .dpm_solver import DPMSolver
from .em import SDE_METHODS, EulerMaruyama
from .heun import Heun
from .ode import ODE_METHODS, ProbabilityFlowODE, integrate, probability_flow_drift
from .pc import CORRECTORS, PREDICTORS, PredictorCorrector
from .predictions import data_prediction, noise_prediction

#: config name -> sampler class (``solver=em|pc|ode``)
SOLVERS = {"em": EulerMaruyama, "pc": PredictorCorrector, "ode": ProbabilityFlowODE}


def build_solver(name: str, **kwargs) -> Sampler:
    """Build a sampler by its config name; an unknown name raises an error listing the valid ones."""
    try:
        cls = SOLVERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; valid: {', '.join(SOLVERS)}") from None
    return cls(**kwargs)


__all__ = [
    "Sampler", "SamplingError", "NoiseSource", "tweedie_denoise", "EulerMaruyama", "SDE_METHODS",
    "PredictorCorrector", "PREDICTORS", "CORRECTORS", "ProbabilityFlowODE", "ODE_METHODS", "integrate",
    "probability_flow_drift", "SOLVERS", "build_solver",
    "DDIM", "DPMSolver", "Heun", "noise_prediction", "data_prediction",
]
