"""A folder of PNG/JPEG images, resized and center-cropped to ``resolution`` x ``resolution``.

Each image is converted to RGB (or to 8-bit greyscale with ``grayscale=True``), its shorter side is
resized to ``resolution`` with Pillow's antialiased bicubic filter, and the central square is cut
out. All images are decoded once, at ``setup``, into a uint8 tensor ``(N, C, R, R)`` (256 levels).

Splits: if ``root`` has ``train/`` and ``test/`` subfolders (and optionally ``val/``), they are used as
is. Otherwise every image under ``root`` (recursively, sorted by path) is a candidate and a
``test_size`` share of them, chosen with ``data_seed``, is held out as the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scoresde.data.base import ImageDataModule, Split, derive_seed, resolve_count
from scoresde.data.errors import DataFormatError, DataNotFoundError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataModule", "list_images", "load_image", "load_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(directory: str | Path) -> list[Path]:
    """All files under ``directory`` (recursively) with a PNG/JPEG extension (any case), sorted."""
    directory = Path(directory)
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def load_image(path: str | Path, resolution: int, grayscale: bool = False) -> np.ndarray:
    """Decode one image to uint8 ``(C, R, R)``: shorter side resized to ``R`` (bicubic, antialiased),
    then center-cropped. Raises :class:`DataFormatError` naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("L" if grayscale else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataFormatError(f"cannot decode image {path} as PNG/JPEG: {e}") from e
    w, h = im.size
    if w < 1 or h < 1:
        raise DataFormatError(f"image {path} is empty ({w}x{h})")
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_images(paths: list[Path], resolution: int, grayscale: bool = False) -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor ``(N, C, R, R)``."""
    c = 1 if grayscale else 3
    out = np.empty((len(paths), c, resolution, resolution), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_image(p, resolution, grayscale)
    return torch.from_numpy(out)


class ImageFolderDataModule(ImageDataModule):
    """PNG/JPEG images from a folder, ``levels=256``, ``shape=(C, resolution, resolution)`` with ``C=3``
    (or 1 with ``grayscale``). Unlabelled (``labels(split)`` is None).

    Args:
        root: the image folder (required).
        resolution: side ``R`` of the square images.
        grayscale: decode to one 8-bit channel instead of RGB.
        test_size: without ``train/``/``test/`` subfolders, the share held out as the test split: a
            float fraction in (0, 1) or an int count (at least one image is held out).
        Others as in :class:`~scoresde.data.base.ImageDataModule`; ``val_size=0`` validates on the test
        split (or on ``val/`` if the folder has one).
    """

    name = "folder"
    levels = 256

    def __init__(
        self,
        root: str | Path,
        *,
        resolution: int = 64,
        grayscale: bool = False,
        test_size: int | float = 0.1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        data_seed: int = 0,
        val_size: int | float = 0,
        data_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        dequantize: bool = True,
        random_flip: bool = False,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            data_seed=data_seed,
            val_size=val_size,
            data_range=data_range,
            dequantize=dequantize,
            random_flip=random_flip,
            drop_last=drop_last,
            pin_memory=pin_memory,
        )
        if root is None:
            raise ValueError("ImageFolderDataModule needs `root`, the folder of PNG/JPEG images")
        if int(resolution) < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.root = Path(root).expanduser()
        self.resolution = int(resolution)
        self.grayscale = bool(grayscale)
        self.test_size = test_size
        # not sent to the loggers: the data's `seed` is not the model's (Lightning would refuse to merge them)
        self.save_hyperparameters(logger=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1 if self.grayscale else 3, self.resolution, self.resolution)

    def _not_found(self, directory: Path, why: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"No images for the folder data module: {why}. Expected image files with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case) under {directory} (searched recursively; or "
            f"subfolders train/ and test/, optionally val/). Put your images there or set the data module's "
            "`root` option (e.g. `data.root=/path/to/images` on the command line)."
        )

    def _list(self, directory: Path) -> list[Path]:
        if not directory.is_dir():
            raise self._not_found(directory, f"directory {directory} does not exist")
        paths = list_images(directory)
        if not paths:
            raise self._not_found(directory, f"no PNG/JPEG files in {directory}")
        return paths

    def image_paths(self) -> dict[str, list[Path]]:
        """The image files of each split (``train``, ``test``, and ``val`` if the folder has ``val/``)."""
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            splits = {s: self._list(self.root / s) for s in ("train", "test")}
            if (self.root / "val").is_dir():
                splits["val"] = self._list(self.root / "val")
            return splits
        paths = self._list(self.root)
        if len(paths) < 2:
            raise self._not_found(
                self.root, f"only {len(paths)} image in {self.root}; need at least 2 to split"
            )
        n_test = max(1, resolve_count(self.test_size, len(paths), "test_size"))
        g = torch.Generator().manual_seed(derive_seed(self.data_seed, "folder-test-split"))
        perm = torch.randperm(len(paths), generator=g)
        test_idx = set(perm[:n_test].tolist())
        return {
            "train": [p for i, p in enumerate(paths) if i not in test_idx],
            "test": [p for i, p in enumerate(paths) if i in test_idx],
        }

    def prepare_data(self) -> None:
        """Check that there are images (clear error otherwise)."""
        self.image_paths()

    def _load_splits(self) -> dict[str, Split]:
        return {
            s: (load_images(paths, self.resolution, self.grayscale), None)
            for s, paths in self.image_paths().items()
        }
