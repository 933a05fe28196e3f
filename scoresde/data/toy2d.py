"""Two-dimensional toy densities, generated (seeded) -- continuous data, no quantization.

Scales follow the FFJORD toy-data conventions so that (nearly) all mass lies in ``[-4, 4]^2``:

* ``moons``: scikit-learn's two moons (noise std 0.1), centred and scaled by 2 -- x within about
  +-3.8, y within about +-2.3.
* ``swissroll``: scikit-learn's swiss roll (noise std 1.0), coordinates (x, z) / 5 -- within about
  [-2.7, 3.3] x [-3, 3.6].
* ``checkerboard``: uniform on the 8 dark squares of a 4x4 board of 2x2 squares covering [-4, 4]^2.
* ``8gaussians``: equal mixture of 8 Gaussians (std 0.5/1.414 = 0.35) centred on a circle of radius
  4/1.414 = 2.83 -- within [-4, 4] up to ~1e-4 of the mass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scoresde.data.base import ScoreDataModule, Split, derive_seed, make_generator

__all__ = ["TOY2D_DATASETS", "Toy2DDataModule", "sample_toy2d"]


def _moons(n: int, g: torch.Generator | None) -> torch.Tensor:
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x, y], dim=1) + 0.1 * torch.randn(n, 2, generator=g)
    return (pts - torch.tensor([0.5, 0.25])) * 2.0


def _swissroll(n: int, g: torch.Generator | None) -> torch.Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + torch.randn(n, 2, generator=g)
    return pts / 5.0


def _checkerboard(n: int, g: torch.Generator | None) -> torch.Tensor:
    x1 = torch.rand(n, generator=g) * 4.0 - 2.0
    x2 = torch.rand(n, generator=g) - 2.0 * torch.randint(0, 2, (n,), generator=g).float()
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) * 2.0


def _eight_gaussians(n: int, g: torch.Generator | None) -> torch.Tensor:
    s = 1.0 / math.sqrt(2.0)
    centers = 4.0 * torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    k = torch.randint(0, 8, (n,), generator=g)
    return (centers[k] + 0.5 * torch.randn(n, 2, generator=g)) / 1.414


TOY2D_DATASETS: dict[str, Callable[[int, torch.Generator | None], torch.Tensor]] = {
    "moons": _moons,
    "swissroll": _swissroll,
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
}


def _check_name(name: str) -> str:
    if name not in TOY2D_DATASETS:
        raise ValueError(f"unknown toy2d dataset {name!r}; valid: {', '.join(TOY2D_DATASETS)}")
    return name


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` fresh float32 draws ``(n, 2)`` from toy density ``name`` (CPU; global RNG if no generator)."""
    return TOY2D_DATASETS[_check_name(name)](int(n), generator).to(torch.float32)


class Toy2DDataModule(ScoreDataModule):
    """A 2-D toy density with fixed, seeded train/val/test sets (float32 ``(N, 2)``).

    Args:
        dataset: one of ``moons``, ``swissroll``, ``checkerboard``, ``8gaussians``.
        n_train, n_val, n_test: sizes of the fixed sets, generated from ``data_seed`` (independent
            streams per split, so changing one size leaves the others unchanged).
        random_flip: accepted for a uniform interface but must be False (a flip would change these
            asymmetric densities).
        Others as in :class:`~scoresde.data.base.ScoreDataModule` (``seed``: the shuffling order).

    Attributes: ``shape == (2,)``, ``levels is None``, ``data_range == (-4.0, 4.0)`` (the nominal box
    holding nearly all mass; data are neither scaled nor clipped to it), ``dataset``.
    Dataloaders yield float32 ``(B, 2)`` batches.
    """

    name = "toy2d"
    levels = None
    data_range = (-4.0, 4.0)

    def __init__(
        self,
        dataset: str = "moons",
        *,
        n_train: int = 100_000,
        n_val: int = 10_000,
        n_test: int = 10_000,
        batch_size: int = 512,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        data_seed: int = 0,
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
            drop_last=drop_last,
            pin_memory=pin_memory,
        )
        self.dataset = _check_name(dataset)
        if random_flip:
            raise ValueError("random_flip is not meaningful for toy2d point data; set random_flip=False")
        self.random_flip = False
        self.sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        for split, n in self.sizes.items():
            if n < 1:
                raise ValueError(f"n_{split} must be >= 1, got {n}")
        # not sent to the loggers: the data's `seed` is not the model's (Lightning would refuse to merge them)
        self.save_hyperparameters(logger=False)

    @property
    def shape(self) -> tuple[int]:
        """Per-example shape ``(2,)``."""
        return (2,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fresh draws, float32 ``(n, 2)``, independent of the fixed sets."""
        return sample_toy2d(self.dataset, n, generator)

    def _load_splits(self) -> dict[str, Split]:
        return {
            split: (
                sample_toy2d(
                    self.dataset, n, make_generator(derive_seed(self.data_seed, self.dataset, split))
                ),
                None,
            )
            for split, n in self.sizes.items()
        }

    def data(self, split: str) -> torch.Tensor:
        """The fixed split, float32 ``(N, 2)``."""
        return self._split(split)[0]

    def _loader_data(self, split: str) -> torch.Tensor:
        return self.data(split)

    def integer_data(self, split: str) -> torch.Tensor:
        """Not available: toy2d data are continuous (use :meth:`data`)."""
        raise TypeError(
            "toy2d data are continuous (levels=None): use data(split) instead of integer_data(split)"
        )
