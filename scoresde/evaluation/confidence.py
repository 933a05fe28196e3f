"""Classifier confidence on samples: mean max-probability and the class histogram's KL to uniform.

With the ``digits`` classifier (test accuracy 0.99): real test images score a mean max-probability of
about 0.99, and a good sampler's class histogram is close to uniform (KL 0.003-0.006 nats on 1,000 samples);
blurry or ambiguous samples lower the first, mode dropping raises the second. Neither sees memorisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from scoresde.evaluation.features import FeatureExtractor

__all__ = ["ConfidenceResult", "classifier_confidence", "confidence_from_logits"]


@dataclass(frozen=True)
class ConfidenceResult:
    """``mean_max_prob``: mean over samples of the largest class probability; ``class_histogram``: the
    fraction of samples assigned (arg-max) to each class; ``kl_to_uniform``: ``KL(histogram || uniform)``
    in nats (0 for a perfectly balanced set, ``log K`` when all samples fall in one class)."""

    mean_max_prob: float
    class_histogram: tuple[float, ...]
    kl_to_uniform: float
    num_samples: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["class_histogram"] = list(self.class_histogram)
        return d


def confidence_from_logits(logits: torch.Tensor) -> ConfidenceResult:
    """:class:`ConfidenceResult` of class logits ``(N, K)``."""
    if logits.dim() != 2 or len(logits) == 0:
        raise ValueError(f"expected logits (N, K) with N >= 1, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")
    probs = logits.to(torch.float64).softmax(dim=1)
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).to(torch.float64) / len(probs)
    nz = hist > 0
    kl = float((hist[nz] * (hist[nz] * k).log()).sum())
    return ConfidenceResult(float(probs.max(1).values.mean()), tuple(hist.tolist()), max(kl, 0.0), len(probs))


def classifier_confidence(
    extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 500
) -> ConfidenceResult:
    """:class:`ConfidenceResult` of a classifier feature network on integer ``images``; ``ValueError``
    if the network has no class logits."""
    if not extractor.has_logits:
        raise ValueError(f"feature network {extractor.name!r} has no class logits")
    logits = extractor.extract(images, batch_size)[1]
    assert logits is not None
    return confidence_from_logits(logits)

