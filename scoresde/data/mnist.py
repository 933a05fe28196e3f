"""MNIST from the four standard IDX files in a local directory (never downloaded).

Files (each may also be gzipped, with a ``.gz`` suffix; an uncompressed file wins):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``. They are looked for in ``root`` and in ``root/MNIST/raw`` (torchvision's
layout). IDX format: a big-endian header -- magic ``0x00000803`` (2051; unsigned bytes, 3 dims) for
images or ``0x00000801`` (2049; 1 dim) for labels, then one big-endian uint32 per dimension -- then
the raw bytes. Magic, dimensions, file length, label range and count agreement are all checked.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from scoresde.data.base import ImageDataModule, Split, default_data_root
from scoresde.data.errors import DataFormatError, DataNotFoundError

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "MNISTDataModule", "MNIST_FILES", "load_mnist", "read_idx"]

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_URL = "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        kind = "gzip-compressed " if path.suffix == ".gz" else ""
        raise DataFormatError(f"cannot read {kind}IDX file {path}: {e}") from e


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (plain or ``.gz``) whose magic number must be ``magic``
    (2051 for images, 2049 for labels); returns a uint8 array with the header's dimensions."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFormatError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        what = {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}.get(magic, "data")
        raise DataFormatError(
            f"{path} is not an IDX {what} file: magic number {found} (0x{found:08x}), expected {magic} "
            f"(0x{magic:08x}); the file may be corrupted or be the wrong file"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataFormatError(
            f"{path}: file has {len(raw)} bytes but its header (dims {dims}) implies {expected}; "
            "the file is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _search_dirs(root: Path) -> list[Path]:
    return [root, root / "MNIST" / "raw"]


def _locate(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_files(root: str | Path) -> dict[str, Path]:
    """Map each standard file name to its path (plain or ``.gz``) in the first search directory that
    holds all four; raise :class:`DataNotFoundError` otherwise."""
    root = Path(root).expanduser()
    names = [n for pair in MNIST_FILES.values() for n in pair]
    dirs = _search_dirs(root)
    missing_in: dict[Path, list[str]] = {}
    for d in dirs:
        found = {n: _locate(d, n) for n in names}
        if all(found.values()):
            return found  # type: ignore[return-value]
        missing_in[d] = [n for n, p in found.items() if p is None]
    # Report the directory that came closest.
    best = min(dirs, key=lambda d: len(missing_in[d]))
    raise DataNotFoundError(
        f"MNIST files not found. Expected the four IDX files {', '.join(names)} (each optionally "
        f"gzipped, '.gz') in {root}"
        + (f" (also searched {', '.join(map(str, dirs[1:]))})" if dirs[1:] else "")
        + f". Missing in {best}: {', '.join(missing_in[best])}. Download them from {MNIST_URL}, put them "
        "in that directory, or set the data module's `root` option (e.g. `data.root=/path/to/mnist` on the "
        "command line) to the directory that holds them. Nothing is downloaded automatically."
    )


def load_mnist(root: str | Path) -> dict[str, Split]:
    """``{"train": (x, y), "test": (x, y)}``: ``x`` uint8 ``(N, 1, 28, 28)``, ``y`` int64 in 0..9."""
    files = find_mnist_files(root)
    out = {}
    for split, (img_name, lab_name) in MNIST_FILES.items():
        images = read_idx(files[img_name], IDX_IMAGES_MAGIC)
        labels = read_idx(files[lab_name], IDX_LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DataFormatError(f"{files[img_name]}: images are {images.shape[1:]}, expected 28x28")
        if len(labels) != len(images):
            raise DataFormatError(
                f"{files[lab_name]} has {len(labels)} labels but {files[img_name]} has {len(images)} images"
            )
        if labels.size and labels.max() > 9:
            raise DataFormatError(f"{files[lab_name]}: labels must be digits 0..9, found {int(labels.max())}")
        x = torch.from_numpy(images.reshape(-1, 1, 28, 28).copy())
        out[split] = (x, torch.from_numpy(labels.astype(np.int64)))
    return out


class MNISTDataModule(ImageDataModule):
    """MNIST, ``levels=256``, ``shape=(1, 28, 28)``, from local IDX files.

    Args:
        root: directory with the IDX files (or with ``MNIST/raw/`` inside); default
            ``$SCORESDE_DATA_DIR/mnist`` or ``~/.cache/scoresde/mnist``.
        Others as in :class:`~scoresde.data.base.ImageDataModule`; ``val_size=0`` validates on the test set.
    """

    name = "mnist"
    levels = 256

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        batch_size: int = 128,
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
        self.root = Path(root).expanduser() if root is not None else default_data_root() / "mnist"
        # not sent to the loggers: the data's `seed` is not the model's (Lightning would refuse to merge them)
        self.save_hyperparameters(logger=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    def prepare_data(self) -> None:
        """Check that the files are there (clear error otherwise); nothing is downloaded."""
        find_mnist_files(self.root)

    def _load_splits(self) -> dict[str, Split]:
        return load_mnist(self.root)
