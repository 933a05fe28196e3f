"""The feature networks by name, as the configs name them (``data._feature_network_``, the default of
each data set, and ``task.feature_network``, which overrides it):

* ``digits`` -- a small CNN trained on the digits train split, weights shipped with the package;
* ``mnist`` -- the same recipe, weights trained locally;
* ``inception`` -- the standard FID Inception-v3, weights read from a local file.

Nothing is ever downloaded. A new network: a :class:`~.features.FeatureExtractor` subclass and one
line here.
"""

from __future__ import annotations

from collections.abc import Callable

from scoresde.evaluation.classifier import digits_feature_extractor, mnist_feature_extractor
from scoresde.evaluation.features import FeatureExtractor
from scoresde.evaluation.inception import InceptionFeatureExtractor

__all__ = ["FEATURE_EXTRACTORS", "build_feature_extractor"]

FEATURE_EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "digits": digits_feature_extractor,
    "mnist": mnist_feature_extractor,
    "inception": InceptionFeatureExtractor,
}


def build_feature_extractor(name: str, **kwargs) -> FeatureExtractor:
    """The feature network registered as ``name`` with keyword arguments such as ``weights`` (a path;
    see each network) and ``device``."""
    try:
        factory = FEATURE_EXTRACTORS[name]
    except KeyError:
        valid = ", ".join(FEATURE_EXTRACTORS)
        raise ValueError(f"unknown feature network {name!r}; valid: {valid}") from None
    return factory(**kwargs)
