"""Samplers of the reverse process: the reverse SDE (torchsde: Euler-Maruyama and its other schemes),
predictor-corrector, the probability-flow ODE (scipy), and the few-step solvers of the probability flow
(DDIM, DPM-Solver / DPM-Solver++, EDM's Heun, UniPC). Each is built from keyword arguments (its YAML
config) and has ``sample(score_fn, sde, shape, *, generator=None, seeds=None, x_T=None, progress=False)``
(the one :class:`~.base.Sampler` entry; a sampler writes only its steps) and ``nfe``, the number of score
evaluations of the last call."""

from .base import NoiseSource, Sampler, SamplingError, tweedie_denoise
from .ddim import DDIM
from .dpm_solver import DPMSolver
from .heun import Heun
from .ode import ODE_METHODS, ProbabilityFlowODE, integrate, probability_flow_drift
from .pc import CORRECTORS, PREDICTORS, PredictorCorrector
from .predictions import data_prediction, noise_prediction
from .reverse_sde import SDE_METHODS, EulerMaruyama, ReverseSDESolver
from .unipc import UniPC

__all__ = [
    "Sampler", "SamplingError", "NoiseSource", "tweedie_denoise", "ReverseSDESolver", "EulerMaruyama",
    "SDE_METHODS",
    "PredictorCorrector", "PREDICTORS", "CORRECTORS", "ProbabilityFlowODE", "ODE_METHODS", "integrate",
    "probability_flow_drift",
    "DDIM", "DPMSolver", "Heun", "UniPC", "noise_prediction", "data_prediction",
]
