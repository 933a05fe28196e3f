"""Image restoration for linear measurements ``y = A x + sigma_y n`` with a trained score model (no
retraining): the operators and their SVDs (:mod:`.operators`) and the posterior samplers
(:mod:`.samplers`)."""

from .operators import (
    AveragePool,
    Colorization,
    Dense,
    GaussianBlur,
    Identity,
    LinearOperator,
    Mask,
    Separable,
    UniformBlur,
)

__all__ = [
    "LinearOperator", "Dense", "Mask", "Identity", "Colorization", "Separable", "AveragePool",
    "GaussianBlur", "UniformBlur",
]
