"""Settings objects of the app's own config blocks (those no library object takes), each checked in its
constructor -- the one place its rules are written."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from scoresde.train.build import plain

__all__ = ["LikelihoodSettings"]


@dataclasses.dataclass(frozen=True)
class LikelihoodSettings:
    """The ``likelihood`` config block, checked on construction (so a typo fails before training, not
    after it). ``estimator``, ``method``, ``rtol``, ``atol``, ``eps`` and ``per_example`` go to
    :func:`scoresde.likelihood.log_likelihood`; ``seeds`` are explicit per-example seeds; ``bound``: also
    the variational bound (:mod:`scoresde.bound`) with ``bound_samples`` time samples per example."""

    split: str = "test"
    num_examples: int | None = None
    batch_size: int = 500
    estimator: str = "rademacher"
    method: str = "RK45"
    rtol: float = 1e-3
    atol: float = 1e-3
    eps: float = 1e-5
    seeds: list[int] | None = None
    per_example: bool = False
    bound: bool = False
    bound_samples: int = 100

    def __post_init__(self) -> None:
        from scipy.integrate import solve_ivp

        from scoresde.likelihood import ESTIMATORS

        problems = []
        if self.split not in ("train", "val", "test"):
            problems.append(f"split must be train, val or test, got {self.split!r}")
        if self.num_examples is not None and int(self.num_examples) < 1:
            problems.append(f"num_examples must be >= 1 (null: all), got {self.num_examples}")
        if int(self.batch_size) < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.estimator not in ESTIMATORS:
            problems.append(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        try:  # scipy's own check of the method name, on a one-line ODE
            solve_ivp(lambda t, y: -y, (0.0, 1.0), [1.0], method=self.method)
        except (ValueError, TypeError):
            problems.append(
                f"method {self.method!r} is not a scipy solve_ivp method; valid: RK45, RK23, DOP853, Radau, "
                "BDF, LSODA"
            )
        for key in ("rtol", "atol", "eps"):
            if not float(getattr(self, key)) > 0:
                problems.append(f"{key} must be > 0, got {getattr(self, key)}")
        if int(self.bound_samples) < 1:
            problems.append(f"bound_samples must be >= 1, got {self.bound_samples}")
        if self.seeds is not None and (not isinstance(self.seeds, list | tuple) or len(self.seeds) == 0):
            problems.append(f"seeds must be a non-empty list of integers, got {self.seeds!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | LikelihoodSettings) -> LikelihoodSettings:
        """The settings of a ``likelihood`` block (a mapping; unknown keys are an error)."""
        return cfg if isinstance(cfg, cls) else cls(**plain(cfg))

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`scoresde.likelihood.log_likelihood` / ``bits_per_dim``."""
        return {k: getattr(self, k) for k in ("estimator", "method", "rtol", "atol", "eps", "per_example")}
