"""Evaluation: sample-based distances (toy data) and image-quality metrics in pluggable feature spaces.

Nothing here imports Lightning or Hydra, and nothing downloads. Typical use on images::

    from scoresde.evaluation import build_feature_extractor, reference_stats, to_uint8, compute_image_metrics

    net = build_feature_extractor("digits")     # or "mnist", "inception"; conf/data/*.yaml name the default
    ref = reference_stats("digits-train", net, dm.integer_data("train"))   # cached on disk
    metrics = compute_image_metrics(to_uint8(samples, levels=17), ref, net)  # FID, KID, IS

Modules: :mod:`~.features` (the interface), :mod:`~.registry` (the networks by name),
:mod:`~.classifier` (digits/MNIST CNN), :mod:`~.inception` (FID Inception-v3), :mod:`~.samples`
(quantization), :mod:`~.stats` (reference statistics and cache), :mod:`~.fid` (FID/KID/IS via
torchmetrics), :mod:`~.spread` (the spread of a metric over seed sets),
:mod:`~.memorization`, :mod:`~.confidence`, :mod:`~.distances` (toy 2-D).
"""

from .classifier import (
    ClassifierFeatureExtractor,
    SmallCNN,
    classifier_accuracy,
    digits_feature_extractor,
    load_classifier,
    mnist_feature_extractor,
    save_classifier,
    train_classifier,
)
from .confidence import ConfidenceResult, classifier_confidence, confidence_from_logits
from .distances import mmd_rbf, sliced_wasserstein
from .errors import WeightsFormatError, WeightsNotFoundError
from .features import FeatureExtractor, check_images
from .fid import (
    ImageMetrics,
    compute_image_metrics,
    fid_from_features,
    inception_score_from_logits,
    kid_from_features,
)
from .inception import InceptionFeatureExtractor, find_inception_weights
from .memorization import MemorizationResult, memorization, nearest_distances
from .registry import FEATURE_EXTRACTORS, build_feature_extractor
from .samples import to_uint8
from .spread import Comparison, SpreadResult, compare
from .stats import (
    DEFAULT_REFERENCE_SPLIT,
    ReferenceStats,
    ReferenceStatsCache,
    compute_reference_stats,
    data_hash,
    default_stats_dir,
    load_fid_statistics,
    reference_stats,
)

__all__ = [
    "DEFAULT_REFERENCE_SPLIT",
    "FEATURE_EXTRACTORS",
    "ClassifierFeatureExtractor",
    "Comparison",
    "ConfidenceResult",
    "FeatureExtractor",
    "ImageMetrics",
    "InceptionFeatureExtractor",
    "MemorizationResult",
    "ReferenceStats",
    "ReferenceStatsCache",
    "SmallCNN",
    "SpreadResult",
    "WeightsFormatError",
    "WeightsNotFoundError",
    "build_feature_extractor",
    "check_images",
    "classifier_accuracy",
    "classifier_confidence",
    "compare",
    "compute_image_metrics",
    "compute_reference_stats",
    "confidence_from_logits",
    "data_hash",
    "default_stats_dir",
    "load_fid_statistics",
    "digits_feature_extractor",
    "fid_from_features",
    "find_inception_weights",
    "inception_score_from_logits",
    "kid_from_features",
    "load_classifier",
    "memorization",
    "mmd_rbf",
    "mnist_feature_extractor",
    "nearest_distances",
    "reference_stats",
    "save_classifier",
    "sliced_wasserstein",
    "to_uint8",
    "train_classifier",
]
