"""Shared machinery of the data modules: splits, seeded batching, and the map to the model space.

Design (where the discrete -> continuous map happens)
-----------------------------------------------------
Image data are held in memory as ``uint8`` integers in ``[0, levels)`` with shape ``(N, C, H, W)``.
The dataloaders do the map to the model space on the CPU, per batch: a sampler
(:class:`EpochBatchSampler`) yields ``(indices, batch_seed)``; the dataset
(:class:`BatchedSplit`) gathers the integer batch and applies :class:`ModelSpaceTransform`
(random horizontal flip for training if enabled, then uniform dequantization via
:func:`scoresde.quantization.dequantize`) with a ``torch.Generator`` seeded by ``batch_seed``.
Hence:

* ``train_dataloader()`` / ``val_dataloader()`` / ``test_dataloader()`` yield plain FLOAT tensors of
  shape ``(B, C, H, W)`` in ``data_range`` -- inside Lightning and out of it alike;
* the noise is a function of ``seed`` (and the epoch, for training) only, never of ``num_workers``;
  validation and test batches get the same noise on every pass, so the held-out loss is comparable
  across epochs;
* Lightning calls ``set_epoch`` on the sampler, so a resumed run reshuffles exactly like the original.

Code outside the dataloaders (bits/dim, FID, plots) uses ``integer_data(split)`` and
``to_model_space(batch_uint8, generator)``, which applies the same map.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scoresde import quantization as q

__all__ = [
    "SPLITS",
    "BatchedSplit",
    "EpochBatchSampler",
    "ImageDataModule",
    "ModelSpaceTransform",
    "ScoreDataModule",
    "default_data_root",
    "derive_seed",
    "make_generator",
    "per_process_batch_size",
    "random_hflip",
    "resolve_count",
]

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, "torch.Tensor | None"]


def default_data_root() -> Path:
    """Parent directory of the datasets when no ``root`` is given: ``$SCORESDE_DATA_DIR`` if set, else
    ``~/.cache/scoresde`` (absolute, so it does not move when Hydra changes the working directory)."""
    env = os.environ.get("SCORESDE_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/scoresde").expanduser()


def derive_seed(*keys: int | str) -> int:
    """A well-mixed 63-bit seed from integers and strings (via ``numpy.random.SeedSequence``)."""
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def resolve_count(size: int | float, n: int, what: str) -> int:
    """``size`` as a count out of ``n``: an int is a count, a float in ``(0, 1)`` a fraction (rounded,
    at least 1). Raises ``ValueError`` unless ``0 <= count < n``."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise ValueError(f"{what} must be an int count or a float fraction, got {size!r}")
    if isinstance(size, float) and not float(size).is_integer():
        if not 0.0 < size < 1.0:
            raise ValueError(f"{what} as a fraction must lie in (0, 1), got {size}")
        count = max(1, int(round(size * n)))
    else:
        count = int(size)
    if count < 0 or count >= n:
        raise ValueError(f"{what}={size!r} must leave at least one of the {n} examples (0 <= count < {n})")
    return count


def per_process_batch_size(global_batch: int, world_size: int, what: str = "data.batch_size") -> int:
    """The batch of one of ``world_size`` processes when ``global_batch`` examples make one step; a
    ``ValueError`` naming ``what`` when it does not divide."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if global_batch % world_size:
        lo = max(world_size, global_batch - global_batch % world_size)
        raise ValueError(
            f"{what}={global_batch} is the global batch, split evenly across the {world_size} processes "
            f"(trainer.devices x trainer.num_nodes): it must be a multiple of {world_size}, e.g. {lo} or "
            f"{lo + world_size}"
        )
    return global_batch // world_size


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each example of ``x`` (``(B, C, H, W)``) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


@dataclass(frozen=True)
class ModelSpaceTransform:
    """Integer images ``(B, C, H, W)`` in ``[0, levels)`` -> float model-space images in ``data_range``.

    ``augment=True`` applies the random horizontal flip (if ``random_flip``); then the integers are
    dequantized: uniformly (``dequantize=True``; the variable bits/dim is computed for) or to the bin
    centres (``dequantize=False``; deterministic).
    """

    levels: int
    data_range: tuple[float, float] = (-1.0, 1.0)
    dequantize: bool = True
    random_flip: bool = False

    def __call__(
        self, x_int: torch.Tensor, generator: torch.Generator | None = None, augment: bool = False
    ) -> torch.Tensor:
        if augment and self.random_flip:
            x_int = random_hflip(x_int, generator)
        mode = "uniform" if self.dequantize else "none"
        return q.dequantize(x_int, self.levels, self.data_range, dequantization=mode, generator=generator)


class EpochBatchSampler(Sampler):
    """Yields ``(indices, batch_seed)`` per batch; a pure function of ``(seed, stream, epoch)``.

    With ``shuffle`` the order and seeds change with the epoch (``set_epoch``, called by Lightning;
    without it the epoch advances by one per full pass). Without ``shuffle`` every pass is identical.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int, stream: str
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.stream, self.epoch = seed, stream, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and noise the next pass uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        epoch = self.epoch if self.shuffle else 0
        if self.shuffle:
            self.epoch += 1
        g = make_generator(derive_seed(self.seed, self.stream, epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        num = len(self)
        seeds = torch.randint(0, 2**62, (num,), generator=g).tolist()
        for b in range(num):
            yield order[b * self.batch_size : (b + 1) * self.batch_size], seeds[b]


class BatchedSplit(Dataset):
    """Map-style dataset indexed by ``(indices, batch_seed)``: returns ``transform(data[indices])``
    (or the raw rows when ``transform`` is None). Used with ``DataLoader(batch_size=None)``."""

    def __init__(self, data: torch.Tensor, transform: Callable | None = None, augment: bool = False) -> None:
        self.data, self.transform, self.augment = data, transform, augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[torch.Tensor, int]) -> torch.Tensor:
        indices, batch_seed = item
        x = self.data[indices]
        if self.transform is None:
            return x
        return self.transform(x, generator=make_generator(batch_seed), augment=self.augment)


class ScoreDataModule(pl.LightningDataModule):
    """Base of all data modules: splits, seeded loaders. Subclasses implement :meth:`_load_splits`
    (returning ``{"train": (x, y), "test": (x, y)}`` and optionally ``"val"``), :meth:`_loader_data`
    and :meth:`_batch_transform`.

    The loader settings below live here only: a subclass's ``__init__`` takes its own arguments (and any
    default it changes, e.g. ``batch_size=512``) and passes the rest on as ``**kwargs``. The hyper-parameters
    (``self.hparams``, stored in checkpoints as ``datamodule_hyper_parameters``) are saved here, once, for the
    whole class chain: every constructor argument of every class from this one to the subclass. They are not
    sent to the loggers: the data's ``seed`` is not the LightningModule's, and Lightning refuses to train when
    a key of both differs ("Error while merging hparams"). The app records the data settings that shape
    training in each checkpoint's ``scoresde_run`` too (``scoresde.tasks.train.run_settings``).

    Args:
        batch_size: training batch size, GLOBAL: under DDP (a trainer with ``world_size`` W > 1 attached) each
            process draws ``batch_size / W`` examples per step, so one optimizer step sees ``batch_size``
            examples whatever the number of processes (see :func:`per_process_batch_size`).
        eval_batch_size: validation/test batch size, global like ``batch_size`` (default: ``batch_size``).
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: seeds the training order, the augmentation and the dequantization noise.
        data_seed: seeds data generation/splitting that must not change with ``seed`` (the
            validation split carved from train, toy data, the folder's test split).
        val_size: 0 (default): the validation split IS the test split (it is only used to monitor the
            held-out loss; no model selection happens on it). Otherwise an int count or a float
            fraction of train carved out as validation (stratified by label when possible; seeded
            by ``data_seed``), which then keeps the test split untouched.
        drop_last: drop the last incomplete training batch.
        pin_memory: passed to the DataLoaders.
    """

    name: str = ""
    #: quantization levels of discrete data; None: continuous data
    levels: int | None = None

    def __init__(
        self,
        *,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        data_seed: int = 0,
        val_size: int | float = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and int(eval_batch_size) < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.data_seed = int(data_seed)
        self.val_size = val_size
        self.drop_last = bool(drop_last)
        self.pin_memory = bool(pin_memory)
        self._splits: dict[str, Split] | None = None
        # reads the arguments of this __init__ and of every subclass __init__ that called it
        self.save_hyperparameters(logger=False)

    # ----------------------------------------------------------------------------- subclass hooks
    def _load_splits(self) -> dict[str, Split]:
        raise NotImplementedError

    def _loader_data(self, split: str) -> torch.Tensor:
        raise NotImplementedError

    def _batch_transform(self) -> Callable | None:
        return None

    # ----------------------------------------------------------------------------- splits
    def setup(self, stage: str | None = None) -> None:
        """Load (or generate) all splits; idempotent. Called by Lightning, or lazily by the accessors."""
        if self._splits is None:
            self._splits = self._with_val_split(self._load_splits())

    def _with_val_split(self, splits: dict[str, Split]) -> dict[str, Split]:
        if "val" in splits:
            return splits
        x, y = splits["train"]
        if self.val_size == 0:
            return {**splits, "val": splits["test"]}
        n_val = resolve_count(self.val_size, len(x), "val_size")
        idx = np.arange(len(x))
        tr_idx, va_idx = _carve(idx, n_val, None if y is None else y.numpy(), self.data_seed)
        tr_idx, va_idx = torch.from_numpy(np.sort(tr_idx)), torch.from_numpy(np.sort(va_idx))
        take = lambda t, i: None if t is None else t[i]  # noqa: E731
        return {**splits, "train": (x[tr_idx], take(y, tr_idx)), "val": (x[va_idx], take(y, va_idx))}

    def _split(self, split: str) -> Split:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.setup()
        assert self._splits is not None
        return self._splits[split]

    @property
    def is_discrete(self) -> bool:
        """Whether the data are discrete (integers in ``[0, levels)``, bits/dim apply) rather than
        continuous (``levels is None``, e.g. the 2-D toys)."""
        return self.levels is not None

    def examples(self, split: str) -> torch.Tensor:
        """A split's examples as stored: ``uint8`` integers ``(N, C, H, W)`` for discrete data, floats for
        continuous data."""
        return self._split(split)[0]

    def labels(self, split: str) -> torch.Tensor | None:
        """Class labels (int64, ``(N,)``) of a split, or None for unlabelled data."""
        return self._split(split)[1]

    def num_examples(self, split: str) -> int:
        """Number of examples in a split."""
        return len(self._split(split)[0])

    # ----------------------------------------------------------------------------- loaders
    @property
    def world_size(self) -> int:
        """Number of processes sharing each batch: the attached trainer's ``world_size`` (1 without one)."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self._loader_data(split)
        if len(data) == 0:
            raise ValueError(f"{self.name}: the {split!r} split is empty")
        batch_size = per_process_batch_size(
            self.batch_size if train else self.eval_batch_size,
            self.world_size,
            "data.batch_size" if train else "data.eval_batch_size",
        )
        sampler = EpochBatchSampler(
            len(data),
            batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            seed=self.seed,
            stream=split,
        )
        if len(sampler) == 0:
            raise ValueError(
                f"{self.name}: batch_size={batch_size} with drop_last leaves no batch of the {len(data)} "
                f"{split} examples"
            )
        return DataLoader(
            BatchedSplit(data, self._batch_transform(), augment=train),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (per epoch, from ``seed``), augmented, dequantized float batches."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order with fixed (seeded) dequantization noise; no augmentation."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order with fixed (seeded) dequantization noise; no augmentation."""
        return self._loader("test", train=False)


def _carve(idx: np.ndarray, n_val: int, y: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (train, val) with ``n_val`` in val; stratified by ``y`` when possible."""
    from sklearn.model_selection import train_test_split

    if y is not None:
        try:
            return train_test_split(idx, test_size=n_val, stratify=y, random_state=seed % 2**32)
        except ValueError:  # too few examples per class for a stratified split: fall back to random
            pass
    return train_test_split(idx, test_size=n_val, random_state=seed % 2**32)


class ImageDataModule(ScoreDataModule):
    """Base of the image data modules: integer data ``uint8 (N, C, H, W)`` in ``[0, levels)``.

    Args (besides those of :class:`ScoreDataModule`):
        data_range: ``(lo, hi)`` of the model space; ``(-1, 1)`` (default) or ``(0, 1)``. The bits/dim
            offset follows from it (see :mod:`scoresde.quantization`).
        dequantize: True (default): uniform dequantization, so training sees the continuous variable
            whose density bits/dim evaluates. False: bin centres (deterministic).
        random_flip: random horizontal flip of training batches (never of val/test batches).

    Attributes: ``shape`` (C, H, W), ``levels``, ``data_range``, ``dequantize``, ``random_flip``.
    """

    levels: int = 256

    def __init__(
        self,
        *,
        data_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        dequantize: bool = True,
        random_flip: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if len(data_range) != 2 or not float(data_range[1]) > float(data_range[0]):
            raise ValueError(
                f"data_range must be (lo, hi) with lo < hi, e.g. (-1, 1) or (0, 1); got {data_range!r}"
            )
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.dequantize = bool(dequantize)
        self.random_flip = bool(random_flip)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-example shape ``(C, H, W)``."""
        raise NotImplementedError

    @property
    def transform(self) -> ModelSpaceTransform:
        """The integer -> model-space map used by the dataloaders."""
        return ModelSpaceTransform(self.levels, self.data_range, self.dequantize, self.random_flip)

    def _batch_transform(self) -> ModelSpaceTransform:
        return self.transform

    def _loader_data(self, split: str) -> torch.Tensor:
        return self.integer_data(split)

    def integer_data(self, split: str) -> torch.Tensor:
        """The split as ``uint8`` integers in ``[0, levels)``, shape ``(N, C, H, W)``."""
        return self._split(split)[0]

    def to_model_space(
        self, batch_uint8: torch.Tensor, generator: torch.Generator | None = None, augment: bool = False
    ) -> torch.Tensor:
        """Map an integer batch ``(B, C, H, W)`` to float model space exactly as the dataloaders do
        (``augment=True``: also the training flip, if enabled). ``generator`` must live on the batch's
        device."""
        if batch_uint8.dim() != 4 or tuple(batch_uint8.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"expected a batch of shape (B, {', '.join(map(str, self.shape))}), "
                f"got {tuple(batch_uint8.shape)}"
            )
        q.check_integer_data(batch_uint8, self.levels)
        return self.transform(batch_uint8, generator=generator, augment=augment)
