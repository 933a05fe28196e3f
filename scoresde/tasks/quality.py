"""What ``task=evaluate`` measures on image samples, shared by the unconditional evaluation
(:mod:`scoresde.tasks.evaluate`) and the conditional one (:mod:`scoresde.tasks.condition_evaluate`): the seed
sets, the feature network and FID/KID (+IS, confidence, memorisation, the real-data floor) over the seed
sets, against a data split or one class of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scoresde.evaluation import (
    FEATURE_EXTRACTORS,
    ClassifierFeatureExtractor,
    SpreadResult,
    build_feature_extractor,
    compute_image_metrics,
    confidence_from_logits,
    fid_from_features,
    load_fid_statistics,
    memorization,
    reference_stats,
    to_uint8,
)

from .common import SEED_STRIDE, ConfigError, per_item_seeds

__all__ = [
    "evaluation_seed_sets", "external_reference", "feature_network", "image_quality", "split_images",
    "spread_dict",
]


def evaluation_seed_sets(num_sets: int, num_samples: int, seed: int, explicit: Any = None) -> list[list[int]]:
    """``num_sets`` disjoint seed lists of ``num_samples`` (``seed * SEED_STRIDE + k * num_samples + i``), or
    the one explicit list."""
    if explicit is not None:
        return [per_item_seeds(explicit, None, seed)]
    if num_sets < 1 or num_samples < 1:
        raise ConfigError(f"need task.seed_sets >= 1 and num_samples >= 1, got {num_sets} and {num_samples}")
    if num_sets * num_samples > SEED_STRIDE:
        raise ConfigError(f"seed_sets * num_samples must stay below {SEED_STRIDE}")
    base = int(seed) * SEED_STRIDE
    return [[base + k * num_samples + i for i in range(num_samples)] for k in range(num_sets)]


def spread_dict(values: list[float], name: str) -> dict[str, Any]:
    """One value per seed set with its mean and spread, as ``metrics.json`` records it."""
    return SpreadResult(tuple(float(v) for v in values), name).to_dict()


def feature_network(ecfg: dict[str, Any], dm: Any) -> Any:
    """The feature network of ``task.feature_network`` (already resolved from ``data._feature_network_``);
    a :class:`ConfigError` when the data have none."""
    name = ecfg.get("feature_network", "auto")
    if name in (None, "auto"):
        raise ConfigError(
            f"no default feature network for data={dm.name}; set data._feature_network_ or "
            f"task.feature_network to one of {', '.join(FEATURE_EXTRACTORS)}"
        )
    kwargs = {"weights": ecfg["feature_weights"]} if ecfg.get("feature_weights") else {}
    return build_feature_extractor(name, **kwargs)


def split_images(dm: Any, split: str, label: int | None = None) -> torch.Tensor:
    """The integer images of ``split`` (only those of class ``label`` when given)."""
    images = dm.integer_data(split)
    return images if label is None else images[dm.labels(split) == int(label)]


def image_quality(
    sample_sets: list[torch.Tensor],
    dm: Any,
    ecfg: dict[str, Any],
    *,
    levels: int,
    data_range: tuple[float, float],
    seed: int = 0,
    label: int | None = None,
    extractor: Any = None,
    memorization_check: bool = True,
) -> dict[str, Any]:
    """FID/KID (+IS, confidence) per seed set with their spread, memorisation and the real-data floor for
    model-space image samples ``sample_sets`` (one tensor per seed set) of the data module ``dm``.

    ``label``: samples meant to be of that class, scored against that class's images only (reference,
    held-out floor, memorisation), plus the ``accuracy`` of a classifier feature network at predicting
    ``label``. ``extractor``: the :func:`feature_network` when the caller has it already."""
    extractor = feature_network(ecfg, dm) if extractor is None else extractor
    batch = int(ecfg.get("batch_size", 500))
    split = str(ecfg.get("reference_split", "train"))
    train = split_images(dm, split, label)
    sets = [to_uint8(x, levels, data_range) for x in sample_sets]
    extracted = [extractor.extract(s, batch) for s in sets]  # the feature network runs once per sample
    if ecfg.get("reference_stats"):
        ref = external_reference(ecfg["reference_stats"], extractor, int(extracted[0][0].shape[1]))
    else:
        name = f"{dm.name}-{split}" + ("" if label is None else f"-class{label}")
        ref = reference_stats(name, extractor, train, cache_dir=ecfg.get("stats_dir"), batch_size=batch)
    if len(ref.features) == 0:  # moments only (pytorch-fid's mu/sigma): FID, no KID
        per_set = [fid_from_features(ref, f) for f, _ in extracted]
        return {"feature_network": extractor.name, "fingerprint": extractor.fingerprint,
                "reference": {"name": ref.name, "file": str(ecfg["reference_stats"])},
                "fid": spread_dict(per_set, "FID"),
                "note": "the reference file holds only mu/sigma: FID only (KID needs the reference features)"}
    per_set = [
        compute_image_metrics(
            s,
            ref,
            extractor,
            kid_subsets=int(ecfg.get("kid_subsets", 100)),
            kid_subset_size=int(ecfg.get("kid_subset_size", 1000)),
            seed=seed + k,
            features=f,
        )
        for k, (s, f) in enumerate(zip(sets, extracted))
    ]
    out: dict[str, Any] = {
        "feature_network": extractor.name,
        "fingerprint": extractor.fingerprint,
        "reference": {"name": ref.name, "split": split, "num_images": ref.num_samples,
                      **({"file": str(ecfg["reference_stats"])} if ecfg.get("reference_stats") else {})},
        "fid": spread_dict([m.fid for m in per_set], "FID"),
        "kid": spread_dict([m.kid_mean for m in per_set], "KID"),
    }
    if per_set[0].is_mean is not None:
        out["inception_score"] = spread_dict([m.is_mean for m in per_set], "IS")
    all_samples = torch.cat(sets)
    if extractor.has_logits:
        out["confidence"] = confidence_from_logits(torch.cat([logits for _, logits in extracted])).to_dict()
    if label is not None and isinstance(extractor, ClassifierFeatureExtractor):  # it classifies the data
        out["accuracy"] = spread_dict(
            [float((logits.argmax(1) == int(label)).double().mean()) for _, logits in extracted], "accuracy"
        )
    held_out = "test" if split != "test" else "train"
    held = split_images(dm, held_out, label)
    if memorization_check:
        out["memorization"] = memorization(
            all_samples, train, held, percentile=float(ecfg.get("memorization_percentile", 5.0))
        ).to_dict()
    if ecfg.get("data_floor", True):
        fid_real = fid_from_features(ref, extractor.extract(held, batch)[0])
        out["data_floor"] = {
            "fid": fid_real,
            "split": held_out,
            "num_images": len(held),
            "note": f"FID of the {len(held)} real {held_out} images against the reference: what real data "
            "scores (FID grows as the number of samples shrinks, so compare at similar sizes)",
        }
    return out


def external_reference(path: str | Path, extractor: Any, num_features: int):
    """The FID reference of ``task.reference_stats`` (:func:`scoresde.evaluation.load_fid_statistics`).
    Our own files carry the feature network's fingerprint, which must match; the other formats cannot
    say which network made them, so only their width is checked (they must come from the same one)."""
    try:
        ref = load_fid_statistics(path)
    except ValueError as err:
        raise ConfigError(f"task.reference_stats: {err}") from None
    if ref.num_features != num_features:
        raise ConfigError(
            f"task.reference_stats={path} has {ref.num_features} features per image but the feature network "
            f"{extractor.name!r} gives {num_features}; use statistics of the same network "
            "(task.feature_network=...)"
        )
    if ref.fingerprint.startswith("file:"):  # pytorch-fid / pool_3: trusted to be the same network
        ref.fingerprint = extractor.fingerprint
    return ref
