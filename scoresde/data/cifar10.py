"""CIFAR-10 from the standard python pickle batches in a local directory (never downloaded).

Files: ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``, as extracted from
``cifar-10-python.tar.gz``; ``root`` may be that folder or its parent. Each batch is a pickled dict
(read with ``encoding="bytes"``) with ``b"data"``: uint8 ``(N, 3072)`` (1024 red, 1024 green, 1024
blue values, each a row-major 32x32 plane) and ``b"labels"``: N ints in 0..9.

Unpickling is restricted: only the handful of numpy globals an array needs may be loaded, so a
malicious or wrong file is refused with a clear error instead of running code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from scoresde.data.base import ImageDataModule, Split, default_data_root
from scoresde.data.errors import DataFormatError, DataNotFoundError

__all__ = ["CIFAR10DataModule", "CIFAR10_DIRNAME", "CIFAR10_FILES", "load_cifar10", "read_cifar_batch"]

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# The only globals a pickled uint8 array needs. Resolved here, not by module path, so that the
# ``numpy.core`` names of the original (Python 2) files load without numpy 2's deprecation shim.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]
_SCALAR = np.uint8(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 with protocol 2
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a CIFAR-10 batch"
            ) from None


def _get(d: dict, key: str):
    return d.get(key.encode(), d.get(key))


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch; returns ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.
    Any problem raises :class:`DataFormatError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataFormatError(f"cannot read CIFAR-10 batch {path}: {e}") from e
    except Exception as e:  # pickle raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise DataFormatError(
            f"{path} is not a valid CIFAR-10 python batch (could not unpickle: {type(e).__name__}: {e})"
        ) from e
    expect = "a pickled dict with keys b'data' (uint8 array, N x 3072) and b'labels' (N ints in 0..9)"
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected {expect}, got a {type(obj).__name__}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if data is None or labels is None:
        keys = ", ".join(repr(k) for k in obj)
        raise DataFormatError(f"{path}: expected {expect}; found keys {keys}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataFormatError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(labels)
    except Exception as e:  # ragged or odd objects
        raise DataFormatError(f"{path}: b'labels' is not a list of ints ({e})") from e
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataFormatError(
            f"{path}: b'labels' must be {len(data)} ints (one per image), got {labels.dtype} array of shape "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels must lie in 0..9, found [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def find_cifar10_dir(root: str | Path) -> Path:
    """The directory holding the six batch files: ``root`` itself or ``root/cifar-10-batches-py``.
    Raises :class:`DataNotFoundError` (listing the files and directories) otherwise."""
    root = Path(root).expanduser()
    names = [n for files in CIFAR10_FILES.values() for n in files]
    dirs = [root / CIFAR10_DIRNAME, root] if root.name != CIFAR10_DIRNAME else [root]
    missing_in = {d: [n for n in names if not (d / n).is_file()] for d in dirs}
    for d in dirs:
        if not missing_in[d]:
            return d
    best = min(dirs, key=lambda d: len(missing_in[d]))
    parent = root.parent if root.name == CIFAR10_DIRNAME else root
    archive = next(
        (d / CIFAR10_ARCHIVE for d in (root, root.parent) if (d / CIFAR10_ARCHIVE).is_file()), None
    )
    hint = (
        f" Found the archive {archive}: extract it with `tar xzf {archive.name}` (in {archive.parent})."
        if archive is not None
        else ""
    )
    raise DataNotFoundError(
        f"CIFAR-10 files not found. Expected the python batches {', '.join(names)} in "
        f"{' or '.join(str(d) for d in dirs)}. Missing in {best}: {', '.join(missing_in[best])}.{hint} "
        f"Download '{CIFAR10_ARCHIVE}' (the CIFAR-10 python version) from {CIFAR10_URL} and extract it in "
        f"{parent} (giving {parent / CIFAR10_DIRNAME}/), or set the data module's `root` option (e.g. "
        "`data.root=/path/to/cifar10` on the command line) to the folder or its parent. Nothing is "
        "downloaded automatically."
    )


def load_cifar10(root: str | Path) -> dict[str, Split]:
    """``{"train": (x, y), "test": (x, y)}``: ``x`` uint8 ``(N, 3, 32, 32)``, ``y`` int64 in 0..9."""
    directory = find_cifar10_dir(root)
    out = {}
    for split, names in CIFAR10_FILES.items():
        batches = [read_cifar_batch(directory / n) for n in names]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        out[split] = (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    return out


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10, ``levels=256``, ``shape=(3, 32, 32)``, from local python batches; random horizontal
    flip on by default (as in the paper).

    Args:
        root: ``cifar-10-batches-py`` or its parent; default ``$SCORESDE_DATA_DIR/cifar10`` or
            ``~/.cache/scoresde/cifar10``.
        Others as in :class:`~scoresde.data.base.ImageDataModule`; ``val_size=0`` validates on the test set.
    """

    name = "cifar10"
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
        random_flip: bool = True,
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
        self.root = Path(root).expanduser() if root is not None else default_data_root() / "cifar10"
        # not sent to the loggers: the data's `seed` is not the model's (Lightning would refuse to merge them)
        self.save_hyperparameters(logger=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def prepare_data(self) -> None:
        """Check that the files are there (clear error otherwise); nothing is downloaded."""
        find_cifar10_dir(self.root)

    def _load_splits(self) -> dict[str, Split]:
        return load_cifar10(self.root)
