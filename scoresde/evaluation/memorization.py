"""Memorisation: how many samples sit closer to a training image than held-out data does.

The threshold is the ``percentile``-th percentile (default 5th) of the distances from each *test* image to
its nearest *training* image; the score is the fraction of samples whose nearest training image is closer
than that threshold (strictly). A model that generalises behaves like fresh data and scores about
``percentile / 100`` (5%); one that reproduces training images scores up to 1 (25% was seen on digits after
overtraining). Classifier metrics (FID, IS, confidence) do not see this, so report it beside them.

Distances are Euclidean in **pixel space** by default: on the integer values ``k`` of the quantized images
(``(N, C, H, W)``, flattened), so samples must be quantized like the data first
(:func:`scoresde.evaluation.to_uint8`). ``space="features"`` uses a feature network's features instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from scoresde.evaluation.features import FeatureExtractor, check_images

__all__ = ["MemorizationResult", "memorization", "nearest_distances"]


@dataclass(frozen=True)
class MemorizationResult:
    """``fraction`` of samples closer to a training example than ``threshold`` (the ``percentile``-th
    percentile of test-to-train nearest-neighbour distances); ``expected`` = ``percentile / 100`` is what
    fresh data scores."""

    fraction: float
    threshold: float
    percentile: float
    expected: float
    num_samples: int
    space: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Euclidean distance from each row of ``queries`` ``(N, D)`` to its nearest row of ``references``
    ``(M, D)``, in float64, computed in chunks of ``chunk`` queries."""
    q = queries.reshape(len(queries), -1).to(torch.float64)
    r = references.reshape(len(references), -1).to(torch.float64)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {q.shape[1]}, references {r.shape[1]}")
    if len(r) == 0:
        raise ValueError("no reference points")
    out = []
    r_sq = (r * r).sum(1)
    for start in range(0, len(q), chunk):
        qc = q[start : start + chunk]
        d2 = (qc * qc).sum(1, keepdim=True) + r_sq[None, :] - 2.0 * qc @ r.T
        out.append(d2.min(dim=1).values.clamp_min(0.0).sqrt())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def memorization(
    samples: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor,
    percentile: float = 5.0,
    space: str = "pixel",
    extractor: FeatureExtractor | None = None,
    batch_size: int = 500,
) -> MemorizationResult:
    """Fraction of ``samples`` closer to a ``train`` image than the ``percentile``-th percentile of
    ``test``-to-``train`` nearest-neighbour distances.

    Args:
        samples, train, test: integer images ``(N, C, H, W)`` of one shape.
        percentile: in ``(0, 100)``; 5 by default.
        space: ``"pixel"`` (L2 on the integer pixel values) or ``"features"`` (L2 on ``extractor``'s
            features).
        extractor: the feature network for ``space="features"``.
    """
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile must lie in (0, 100), got {percentile}")
    for what, x in (("samples", samples), ("train", train), ("test", test)):
        if x.dim() != 4 or x.is_floating_point():
            raise ValueError(f"{what} must be integer images (N, C, H, W); quantize samples first (to_uint8)")
        if len(x) == 0:
            raise ValueError(f"{what} is empty")
    if not (samples.shape[1:] == train.shape[1:] == test.shape[1:]):
        raise ValueError(
            f"shapes differ: samples {tuple(samples.shape[1:])}, train {tuple(train.shape[1:])}, "
            f"test {tuple(test.shape[1:])}"
        )
    if space == "pixel":
        s, tr, te = samples, train, test
    elif space == "features":
        if extractor is None:
            raise ValueError("space='features' needs a feature network (extractor=...)")
        for what, x in (("samples", samples), ("train", train), ("test", test)):
            check_images(x, extractor.levels, extractor.input_shape, what=what)
        s, tr, te = (extractor.extract(x, batch_size)[0] for x in (samples, train, test))
    else:
        raise ValueError(f"unknown space {space!r}; valid: 'pixel', 'features'")
    threshold = float(torch.quantile(nearest_distances(te, tr), percentile / 100.0))
    fraction = float((nearest_distances(s, tr) < threshold).to(torch.float64).mean())
    return MemorizationResult(fraction, threshold, float(percentile), percentile / 100.0, len(samples), space)
