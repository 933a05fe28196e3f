"""Spread of a sample-based metric over several seed sets, and whether two results are within it.

With few reference images a metric such as FID moves a lot between reruns of one sampler (digits: 10.5-17.0
over five reruns against the 297 test images). A single number cannot rank samplers, so a result is the
mean and standard deviation over several disjoint *seed sets* (each a list of per-sample seeds).

Two results ``a`` and ``b`` are *within the spread* when ``|mean_a - mean_b| <= num_std * sqrt(std_a^2 +
std_b^2)``: the difference is no larger than ``num_std`` standard deviations of the difference between two
single seed-set evaluations. This is deliberately conservative (it uses the seed-set spread, not the
smaller standard error of the means): results within it should not be ranked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Comparison", "SpreadResult", "compare"]


@dataclass(frozen=True)
class SpreadResult:
    """Values of one metric over seed sets: ``mean`` and sample standard deviation ``std`` (NaN with
    fewer than 2 sets)."""

    values: tuple[float, ...]
    name: str = "metric"

    @property
    def n(self) -> int:
        """Number of seed sets."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seed sets."""
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seed sets (NaN when n < 2)."""
        return statistics.stdev(self.values) if self.n >= 2 else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready dict (``std`` None when undefined)."""
        std = self.std
        return {"name": self.name, "mean": self.mean, "std": None if math.isnan(std) else std,
                "n": self.n, "values": list(self.values)}

    def __str__(self) -> str:
        return f"{self.name} {self.mean:.4g} +- {self.std:.2g} (n={self.n} seed sets)"


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare`: the difference of means, the spread it is measured against, whether it
    is within it, and a sentence saying so."""

    difference: float
    spread: float
    within: bool
    message: str


def compare(a: SpreadResult, b: SpreadResult, num_std: float = 1.0) -> Comparison:
    """Whether ``a`` and ``b`` differ by no more than ``num_std * sqrt(std_a^2 + std_b^2)``. Needs at least
    two seed sets on each side (``ValueError`` otherwise)."""
    if a.n < 2 or b.n < 2:
        raise ValueError(f"need >= 2 seed sets per result to estimate the spread, got {a.n} and {b.n}")
    if num_std <= 0:
        raise ValueError(f"num_std must be > 0, got {num_std}")
    diff = a.mean - b.mean
    spread = num_std * math.hypot(a.std, b.std)
    within = abs(diff) <= spread
    verdict = (
        "within the seed-set spread: these results cannot be ranked" if within
        else "larger than the seed-set spread"
    )
    message = (f"{a} vs {b}: difference {abs(diff):.4g} is {verdict} "
               f"({num_std:g} std of the difference = {spread:.4g})")
    return Comparison(diff, spread, within, message)

