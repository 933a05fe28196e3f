"""Reference statistics of a data set in a feature network's space, and their on-disk cache.

:class:`ReferenceStats` holds what FID and KID need from the reference images: the number of images, the
sum and the sum of outer products of their features (float64; mean and covariance follow exactly, as in
torchmetrics' FID state) and a seeded subset of the features themselves (for KID).

:class:`ReferenceStatsCache` stores one ``.npz`` file per ``(reference images, feature network)`` --
``<dir>/<name>__<hash>__<network>.npz``, ``<hash>`` the first 16 hex digits of the images' SHA-256 -- in
``$SCORESDE_STATS_DIR`` or ``~/.cache/scoresde/stats``. The images' content keys the file, not their name:
two data sets of one data module class (MNIST and Fashion-MNIST through ``MNISTDataModule``, both named
``mnist-train``) get a file each instead of overwriting each other's; ``name`` only makes the file readable.
The file records the feature network's fingerprint and the full SHA-256 of the images; it is reused only
when both match (and the format version and feature width agree), otherwise the statistics are recomputed
and the file is replaced. Images that changed get a new file; the old one stays until the directory is
cleared. Files are written atomically (a temporary file in the same directory, then
``os.replace``), so concurrent runs never read a half-written file; an unreadable file counts as stale.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scoresde.evaluation.features import FeatureExtractor, check_images

__all__ = [
    "DEFAULT_REFERENCE_SPLIT",
    "ReferenceStats",
    "ReferenceStatsCache",
    "compute_reference_stats",
    "data_hash",
    "default_stats_dir",
    "load_fid_statistics",
    "reference_stats",
]

log = logging.getLogger(__name__)

STATS_FORMAT_VERSION = 1
DEFAULT_MAX_KID_FEATURES = 10_000
#: The split used as FID reference: the larger one. On digits the 297 test images make the Frechet distance
#: move 10.5-17.0 across reruns of one sampler; the 1,500 training images make it far steadier.
DEFAULT_REFERENCE_SPLIT = "train"


def default_stats_dir() -> Path:
    """``$SCORESDE_STATS_DIR`` if set, else ``~/.cache/scoresde/stats`` (absolute)."""
    env = os.environ.get("SCORESDE_STATS_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/scoresde/stats").expanduser()


def data_hash(images: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's dtype, shape and values."""
    t = images.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class ReferenceStats:
    """Feature statistics of reference images.

    Attributes:
        name: what the images are (e.g. ``"digits-train"``).
        feature_name, fingerprint: the feature network's registry name and fingerprint.
        data_hash: :func:`data_hash` of the reference images.
        num_samples: number of reference images.
        features_sum: ``(F,)`` float64 sum of the features.
        features_cov_sum: ``(F, F)`` float64 sum of ``f f^T``.
        features: ``(M, F)`` float32 features of up to ``max_kid_features`` images (a seeded subset), for KID.
    """

    name: str
    feature_name: str
    fingerprint: str
    data_hash: str
    num_samples: int
    features_sum: torch.Tensor
    features_cov_sum: torch.Tensor
    features: torch.Tensor

    @property
    def num_features(self) -> int:
        """Feature width ``F``."""
        return int(self.features_sum.shape[0])

    @property
    def mean(self) -> torch.Tensor:
        """``(F,)`` mean feature."""
        return self.features_sum / self.num_samples

    @property
    def cov(self) -> torch.Tensor:
        """``(F, F)`` unbiased covariance of the features."""
        mu = self.mean
        return (self.features_cov_sum - self.num_samples * torch.outer(mu, mu)) / (self.num_samples - 1)

    @classmethod
    def from_features(
        cls,
        features: torch.Tensor,
        *,
        name: str,
        feature_name: str,
        fingerprint: str,
        data_hash: str,
        max_kid_features: int = DEFAULT_MAX_KID_FEATURES,
    ) -> ReferenceStats:
        """Statistics of a feature matrix ``(N, F)`` (N >= 2). The KID subset is the first
        ``max_kid_features`` rows of a permutation seeded by ``data_hash`` (all rows when N is smaller)."""
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"need a feature matrix (N, F) with N >= 2, got {tuple(features.shape)}")
        f = features.to("cpu", torch.float64)
        n = f.shape[0]
        if n > max_kid_features:
            g = torch.Generator().manual_seed(int(data_hash[:15], 16))
            subset = f[torch.randperm(n, generator=g)[:max_kid_features]]
        else:
            subset = f
        return cls(name, feature_name, fingerprint, data_hash, n, f.sum(0), f.T @ f, subset.to(torch.float32))

    @classmethod
    def from_moments(
        cls, mu: torch.Tensor, sigma: torch.Tensor, *, name: str, feature_name: str, fingerprint: str,
        num_samples: int | None = None,
    ) -> ReferenceStats:
        """Statistics known only by their mean ``(F,)`` and covariance ``(F, F)`` (e.g. pytorch-fid's
        ``mu``/``sigma``): enough for FID, not for KID (no features). ``num_samples`` unknown: 2 is
        recorded, which leaves the mean and covariance exact."""
        n = int(num_samples) if num_samples is not None and int(num_samples) >= 2 else 2
        mu, sigma = mu.to(torch.float64).reshape(-1), sigma.to(torch.float64)
        if sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"mu has {len(mu)} entries but sigma has shape {tuple(sigma.shape)}")
        cov_sum = (n - 1) * sigma + n * torch.outer(mu, mu)
        empty = torch.zeros(0, len(mu), dtype=torch.float32)
        return cls(name, feature_name, fingerprint, "", n, n * mu, cov_sum, empty)

    # ------------------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz``) atomically. Besides our keys the file carries pytorch-fid's ``mu``
        and ``sigma`` and, when it holds every reference feature, the paper's ``pool_3``, so both tools
        read it as their own."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{id(self)}.tmp.npz")
        try:
            extra = {}
            if len(self.features) == self.num_samples:  # every reference feature: the paper's `pool_3`
                extra["pool_3"] = self.features.numpy()
            np.savez(
                tmp,
                mu=self.mean.numpy(),  # pytorch-fid's keys: its `.npz` reader takes this file as it is
                sigma=self.cov.numpy(),
                **extra,
                format_version=np.int64(STATS_FORMAT_VERSION),
                name=np.str_(self.name),
                feature_name=np.str_(self.feature_name),
                fingerprint=np.str_(self.fingerprint),
                data_hash=np.str_(self.data_hash),
                num_samples=np.int64(self.num_samples),
                features_sum=self.features_sum.numpy(),
                features_cov_sum=self.features_cov_sum.numpy(),
                features=self.features.numpy(),
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStats:
        """Read a file written by :meth:`save`; ``ValueError`` if it is not one (or of another version)."""
        path = Path(path).expanduser()
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format_version"]) != STATS_FORMAT_VERSION:
                    raise ValueError(f"{path}: statistics format {int(z['format_version'])}, "
                                     f"expected {STATS_FORMAT_VERSION}")
                return cls(
                    name=str(z["name"]),
                    feature_name=str(z["feature_name"]),
                    fingerprint=str(z["fingerprint"]),
                    data_hash=str(z["data_hash"]),
                    num_samples=int(z["num_samples"]),
                    features_sum=torch.from_numpy(z["features_sum"].astype(np.float64)),
                    features_cov_sum=torch.from_numpy(z["features_cov_sum"].astype(np.float64)),
                    features=torch.from_numpy(z["features"].astype(np.float32)),
                )
        except (OSError, KeyError, ValueError, EOFError) as e:
            raise ValueError(f"cannot read reference statistics {path}: {e}") from e


def load_fid_statistics(path: str | Path, name: str | None = None) -> ReferenceStats:
    """FID reference statistics from any of: a file of ours (:meth:`ReferenceStats.save`), pytorch-fid's
    ``.npz`` (``mu``, ``sigma``) or the paper's ``cifar10_stats.npz`` (``pool_3``: the reference
    activations, ``(N, 2048)``; the mean and unbiased covariance are taken from them). Never unpickles."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "format_version" in keys:
                pass
            elif "pool_3" in keys:
                pool = torch.from_numpy(z["pool_3"].astype(np.float64))
                digest = hashlib.sha256(z["pool_3"].tobytes()).hexdigest()
                return ReferenceStats.from_features(
                    pool.reshape(len(pool), -1), name=name or path.stem, feature_name="pool_3",
                    fingerprint=f"file:{digest}", data_hash=digest,
                )
            elif {"mu", "sigma"} <= keys:
                digest = hashlib.sha256(z["mu"].tobytes() + z["sigma"].tobytes()).hexdigest()
                return ReferenceStats.from_moments(
                    torch.from_numpy(z["mu"]), torch.from_numpy(z["sigma"]), name=name or path.stem,
                    feature_name="mu/sigma", fingerprint=f"file:{digest}",
                )
            else:
                raise ValueError(
                    f"no FID statistics in it (keys {sorted(keys)}): expected ours, pytorch-fid's mu/sigma "
                    "or the paper's pool_3"
                )
    except (OSError, KeyError, EOFError) as e:
        raise ValueError(f"cannot read FID statistics {path}: {e}") from e
    except ValueError as e:
        raise ValueError(f"cannot read FID statistics {path}: {e}") from e
    return ReferenceStats.load(path)


def compute_reference_stats(
    extractor: FeatureExtractor,
    images: torch.Tensor,
    name: str,
    batch_size: int = 500,
    max_kid_features: int = DEFAULT_MAX_KID_FEATURES,
) -> ReferenceStats:
    """Run ``extractor`` over the integer reference ``images`` and summarise (no cache)."""
    extractor.check(images)
    if len(images) < 2:
        raise ValueError(f"need at least 2 reference images, got {len(images)}")
    features, _ = extractor.extract(images, batch_size)
    return ReferenceStats.from_features(
        features, name=name, feature_name=extractor.name, fingerprint=extractor.fingerprint,
        data_hash=data_hash(images), max_kid_features=max_kid_features,
    )


class ReferenceStatsCache:
    """Reference statistics on disk, one file per ``(reference images, feature network)`` (the images by
    their content hash; see the module docstring), recomputed when stale.

    Args:
        directory: where the files live; None: :func:`default_stats_dir`.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_stats_dir()

    def path_for(self, name: str, extractor: FeatureExtractor, images_hash: str) -> Path:
        """The cache file of the reference images whose :func:`data_hash` is ``images_hash`` (called
        ``name``) in ``extractor``'s feature space."""
        safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s)  # noqa: E731
        return self.directory / f"{safe(name)}__{images_hash[:16]}__{safe(extractor.name)}.npz"

    def lookup(self, name: str, extractor: FeatureExtractor, images_hash: str) -> ReferenceStats | None:
        """The cached statistics if present and valid for this network and these images, else None."""
        path = self.path_for(name, extractor, images_hash)
        if not path.is_file():
            return None
        try:
            stats = ReferenceStats.load(path)
        except ValueError as e:
            log.warning("ignoring unreadable reference statistics: %s", e)
            return None
        if stats.fingerprint != extractor.fingerprint:
            log.info("reference statistics %s are stale: the feature network changed", path)
            return None
        if stats.data_hash != images_hash:
            log.info("reference statistics %s are stale: the reference data changed", path)
            return None
        if stats.num_features != extractor.num_features:
            return None
        return stats

    def get(
        self,
        name: str,
        extractor: FeatureExtractor,
        images: torch.Tensor,
        batch_size: int = 500,
        max_kid_features: int = DEFAULT_MAX_KID_FEATURES,
    ) -> ReferenceStats:
        """Cached statistics of ``images`` under ``name`` if valid; otherwise compute, store and return
        them. The images are hashed every time (cheap next to the feature network)."""
        check_images(images, extractor.levels, extractor.input_shape, what="reference images")
        h = data_hash(images)
        stats = self.lookup(name, extractor, h)
        if stats is not None:
            log.info("reusing reference statistics %s", self.path_for(name, extractor, h))
            return stats
        stats = compute_reference_stats(extractor, images, name, batch_size, max_kid_features)
        self.save(stats, extractor)
        return stats

    def save(self, stats: ReferenceStats, extractor: FeatureExtractor) -> Path:
        """Store ``stats`` (atomically) as the entry of its images (``stats.data_hash``) and ``extractor``."""
        path = self.path_for(stats.name, extractor, stats.data_hash)
        stats.save(path)
        log.info("wrote reference statistics %s", path)
        return path


def reference_stats(
    name: str,
    extractor: FeatureExtractor,
    images: torch.Tensor,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 500,
) -> ReferenceStats:
    """Reference statistics of ``images`` (integer, ``(N, C, H, W)``) in ``extractor``'s space, through
    the cache in ``cache_dir`` (default :func:`default_stats_dir`) unless ``use_cache`` is False."""
    if not use_cache:
        return compute_reference_stats(extractor, images, name, batch_size)
    return ReferenceStatsCache(cache_dir).get(name, extractor, images, batch_size)
