"""Samplers of the reverse process: Euler-Maruyama (torchsde), predictor-corrector, the probability-flow
ODE (scipy), and the few-step solvers of the probability flow (DDIM, DPM-Solver / DPM-Solver++, EDM's
Heun, UniPC). Each is built from keyword arguments (its YAML config) and has
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
from .unipc import UniPC

__all__ = [
    "Sampler", "SamplingError", "NoiseSource", "tweedie_denoise", "EulerMaruyama", "SDE_METHODS",
    "PredictorCorrector", "PREDICTORS", "CORRECTORS", "ProbabilityFlowODE", "ODE_METHODS", "integrate",
    "probability_flow_drift",
    "DDIM", "DPMSolver", "Heun", "UniPC", "noise_prediction", "data_prediction",
]
