"""FID, KID and Inception Score through torchmetrics, in any feature network's space.

The features of the samples are computed once (:meth:`FeatureExtractor.extract`) and fed to torchmetrics'
``FrechetInceptionDistance``, ``KernelInceptionDistance`` and ``InceptionScore`` through a pass-through
feature module, so the three metrics share one pass of the network and the reference side comes from
(cached) :class:`~scoresde.evaluation.stats.ReferenceStats` rather than from the reference images. An
extractor can also be handed to torchmetrics directly (``FrechetInceptionDistance(feature=extractor)``):
its ``forward`` takes the integer images and exposes ``num_features``.

* FID: the Frechet distance between Gaussians fitted to reference and sample features.
* KID: the unbiased squared MMD with the cubic polynomial kernel, averaged over ``kid_subsets`` random
  subsets of ``kid_subset_size`` (capped at the number of samples / stored reference features).
* IS: ``exp E_x KL(p(y|x) || p(y))`` over ``is_splits`` splits, only when the network has class logits.

torchmetrics draws KID subsets and the IS permutation from the global RNG; they are run under
``torch.random.fork_rng`` with ``seed``, so results are reproducible and the caller's RNG is untouched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from scoresde.evaluation.features import FeatureExtractor
from scoresde.evaluation.stats import ReferenceStats

__all__ = [
    "ImageMetrics",
    "PrecomputedFeatures",
    "compute_image_metrics",
    "fid_from_features",
    "inception_score_from_logits",
    "kid_from_features",
]


class PrecomputedFeatures(nn.Module):
    """Pass-through "feature network" for torchmetrics: the inputs already are features ``(N, F)``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_features(features: torch.Tensor, num_features: int, what: str) -> torch.Tensor:
    if features.dim() != 2 or features.shape[1] != num_features:
        raise ValueError(f"{what}: expected features (N, {num_features}), got {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{what} contain NaN or inf")
    return features.to("cpu", torch.float64)


def fid_from_features(reference: ReferenceStats, features: torch.Tensor) -> float:
    """FID between the reference statistics and sample ``features`` ``(N, F)`` (N >= 2), computed by
    torchmetrics' ``FrechetInceptionDistance`` with its real-feature state loaded from ``reference``."""
    f = _check_features(features, reference.num_features, "sample features")
    if len(f) < 2 or reference.num_samples < 2:
        raise ValueError("FID needs at least 2 samples and 2 reference images")
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(reference.num_features))
    metric.real_features_sum = reference.features_sum.clone().to(torch.float64)
    metric.real_features_cov_sum = reference.features_cov_sum.clone().to(torch.float64)
    metric.real_features_num_samples = torch.tensor(reference.num_samples, dtype=torch.long)
    metric.update(f, real=False)
    return float(metric.compute())


def kid_from_features(
    reference_features: torch.Tensor,
    features: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID ``(mean, std over subsets)`` between two feature sets, by torchmetrics'
    ``KernelInceptionDistance``; ``subset_size`` is capped at the size of the smaller set."""
    width = features.shape[1] if features.dim() == 2 else -1
    r = _check_features(reference_features, width, "reference features")
    f = _check_features(features, r.shape[1], "sample features")
    size = min(int(subset_size), len(r), len(f))
    if size < 2:
        raise ValueError("KID needs at least 2 samples and 2 reference features")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=PrecomputedFeatures(r.shape[1]), subsets=int(subsets), subset_size=size
        )
    metric.update(r, real=True)
    metric.update(f, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score_from_logits(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score ``(mean, std over splits)`` of class logits ``(N, K)``, by torchmetrics'
    ``InceptionScore`` (``splits`` is capped at ``N``)."""
    if logits.dim() != 2 or len(logits) < 1:
        raise ValueError(f"expected logits (N, K) with N >= 1, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        splits = max(1, min(int(splits), len(logits)))
        metric = InceptionScore(feature=PrecomputedFeatures(logits.shape[1]), splits=splits)
    metric.update(logits.to("cpu", torch.float64))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of a single split
        torch.manual_seed(seed)
        mean, std = metric.compute()
    std = float(std)
    return float(mean), (std if math.isfinite(std) else float("nan"))


@dataclass
class ImageMetrics:
    """Result of :func:`compute_image_metrics`. ``is_mean``/``is_std`` are None when the feature network
    has no class logits."""

    fid: float
    kid_mean: float
    kid_std: float
    is_mean: float | None
    is_std: float | None
    num_samples: int
    num_reference: int
    reference: str
    feature_network: str
    fingerprint: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def compute_image_metrics(
    samples: torch.Tensor,
    reference: ReferenceStats,
    extractor: FeatureExtractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    seed: int = 0,
    batch_size: int = 500,
    features: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> ImageMetrics:
    """FID, KID and (with logits) IS of integer ``samples`` ``(N, C, H, W)`` against ``reference``.

    The samples must already be quantized like the data (:func:`scoresde.evaluation.to_uint8`);
    ``reference`` must come from the same feature network (checked by fingerprint). ``features``:
    ``extractor.extract(samples)`` when the caller already has it (the network is not run again).
    """
    if reference.fingerprint != extractor.fingerprint:
        raise ValueError(
            f"reference statistics {reference.name!r} were computed with another feature network "
            f"({reference.feature_name}: {reference.fingerprint[:40]}...) than {extractor.name!r}; "
            "recompute them (scoresde.evaluation.reference_stats)"
        )
    feats, logits = extractor.extract(samples, batch_size) if features is None else features
    fid = fid_from_features(reference, feats)
    kid_mean, kid_std = kid_from_features(reference.features, feats, kid_subsets, kid_subset_size, seed)
    is_mean = is_std = None
    if logits is not None:
        is_mean, is_std = inception_score_from_logits(logits, is_splits, seed)
    return ImageMetrics(
        fid=fid, kid_mean=kid_mean, kid_std=kid_std, is_mean=is_mean, is_std=is_std,
        num_samples=len(samples), num_reference=reference.num_samples, reference=reference.name,
        feature_network=extractor.name, fingerprint=extractor.fingerprint,
    )

