"""scikit-learn's 8x8 handwritten digits: 1,797 images, 17 grey levels (0..16), 1 channel.

The train/test split is fixed and stratified -- 1,500 train / 297 test, from
``train_test_split(..., test_size=297, stratify=labels, random_state=0)`` -- the same on every machine.
The data ship with scikit-learn; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import torch

from scoresde.data.base import ImageDataModule, Split

__all__ = ["DIGITS_LEVELS", "DIGITS_TEST_SIZE", "DigitsDataModule", "load_digits_splits"]

DIGITS_LEVELS = 17
DIGITS_TEST_SIZE = 297
DIGITS_SPLIT_RANDOM_STATE = 0


def load_digits_splits() -> dict[str, Split]:
    """``{"train": (x, y), "test": (x, y)}`` with ``x`` uint8 ``(N, 1, 8, 8)`` in ``[0, 17)`` and ``y``
    int64, in the fixed stratified 1,500 / 297 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() >= DIGITS_LEVELS:
        raise ValueError("scikit-learn's digits are not integers in [0, 16]; unexpected scikit-learn data")
    x = torch.from_numpy(images.astype(np.uint8)[:, None])
    y = torch.from_numpy(labels)
    tr, te = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_RANDOM_STATE
    )
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}


class DigitsDataModule(ImageDataModule):
    """8x8 digits, ``levels=17``, ``shape=(1, 8, 8)``. Keyword arguments as in
    :class:`~scoresde.data.base.ImageDataModule` / :class:`~scoresde.data.base.ScoreDataModule`;
    ``val_size=0`` (default) validates on the 297 test images."""

    name = "digits"
    levels = DIGITS_LEVELS

    def __init__(
        self,
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
        # not sent to the loggers: the data's `seed` is not the model's (Lightning would refuse to merge them)
        self.save_hyperparameters(logger=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    def _load_splits(self) -> dict[str, Split]:
        return load_digits_splits()
