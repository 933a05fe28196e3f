"""The data layer: Lightning data modules for 2-D toy densities and image datasets.

Image data are integers (``uint8``, ``(N, C, H, W)``, in ``[0, levels)``); the dataloaders map them to
float model space (random horizontal flip for training if enabled, uniform dequantization, scaling to
``data_range``) with :mod:`scoresde.quantization`. See :mod:`scoresde.data.base` for the design.
This package knows nothing of networks or SDEs. Nothing is ever downloaded: missing or malformed files
raise :class:`DataNotFoundError` / :class:`DataFormatError` with the expected files and directory.

=========== ================================ ========= ========== ==========================
name        class                            levels    shape      source
=========== ================================ ========= ========== ==========================
toy2d       :class:`Toy2DDataModule`         None      (2,)       generated (seeded)
digits      :class:`DigitsDataModule`        17        (1, 8, 8)  scikit-learn (bundled)
mnist       :class:`MNISTDataModule`         256       (1, 28, 28) IDX files in ``root``
cifar10     :class:`CIFAR10DataModule`       256       (3, 32, 32) python batches in ``root``
folder      :class:`ImageFolderDataModule`   256       (C, R, R)  PNG/JPEG files in ``root``
=========== ================================ ========= ========== ==========================
"""

from __future__ import annotations

from scoresde.data.base import ImageDataModule, ModelSpaceTransform, ScoreDataModule, default_data_root
from scoresde.data.cifar10 import CIFAR10DataModule
from scoresde.data.digits import DigitsDataModule
from scoresde.data.errors import DataFormatError, DataNotFoundError
from scoresde.data.folder import ImageFolderDataModule
from scoresde.data.mnist import MNISTDataModule
from scoresde.data.toy2d import TOY2D_DATASETS, Toy2DDataModule, sample_toy2d

__all__ = [
    "TOY2D_DATASETS",
    "CIFAR10DataModule",
    "DataFormatError",
    "DataNotFoundError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "ModelSpaceTransform",
    "ScoreDataModule",
    "Toy2DDataModule",
    "default_data_root",
    "sample_toy2d",
]
