"""Exponential moving average of the weights, on Lightning's :class:`WeightAveraging` callback.

The paper's EMA (``models/ema.py`` of the reference code): a shadow copy of the weights starts equal to
the initial weights and after every optimizer step moves towards the current weights,

    shadow <- d * shadow + (1 - d) * param,   d = min(decay, (1 + n) / (10 + n)),

where ``n`` counts the updates made before this one (0 for the first). The warm-up term keeps the
average from being dominated by the random initialisation early on.

:class:`EMA` reproduces exactly that on top of Lightning's callback, which gives for free: the average
is swapped in for validation, saved in checkpoints (the checkpoint's ``state_dict`` holds the AVERAGED
weights, ``current_model_state`` the raw ones, ``averaging_state`` the update count), restored on
resume, and kept per process under DDP (every rank sees identical weights, hence identical averages).

Unlike Lightning's callback, :class:`EMA` does NOT copy the average into the model when training ends
(that would make a checkpoint saved afterwards store the average as the raw weights too, so a run
resumed from it would continue from the wrong weights); use :meth:`EMA.averaged_module` or
:meth:`EMA.swapped` to evaluate with the averaged weights.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging

__all__ = ["EMA", "ema_decay", "ema_update_"]


def ema_decay(num_updates: int, decay: float, warmup: bool = True) -> float:
    """The paper's decay for the update made after ``num_updates`` earlier updates:
    ``min(decay, (1 + n) / (10 + n))`` with warm-up, ``decay`` without."""
    if warmup:
        return min(decay, (1.0 + num_updates) / (10.0 + num_updates))
    return decay


@torch.no_grad()
def ema_update_(shadow: list[torch.Tensor], current: list[torch.Tensor], decay: float) -> None:
    """In place ``shadow <- decay * shadow + (1 - decay) * current`` for lists of tensors (one fused
    ``foreach`` kernel for floating-point tensors; integer tensors are copied)."""
    if not shadow:
        return
    if shadow[0].is_floating_point() or shadow[0].is_complex():
        torch._foreach_lerp_(shadow, current, 1.0 - decay)
    else:
        for s, c in zip(shadow, current):
            s.copy_(c)


class EMA(WeightAveraging):
    """EMA of the LightningModule's parameters and buffers with the paper's warm-up.

    Args:
        decay: the EMA rate (0.9999 for the paper's VP/sub-VP DDPM++, 0.999 for VE NCSN++).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` (the paper) instead of a constant ``decay``.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        super().__init__(device=None, use_buffers=True, multi_avg_fn=self._multi_avg)  # on the model's device
        self._lists: tuple | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After each optimizer step: the fused update on cached tensor lists (the same arithmetic as
        ``AveragedModel.update_parameters`` with :meth:`_multi_avg`, minus its per-step regrouping)."""
        if trainer.global_step <= self._latest_update_step or not self.should_update(
            step_idx=trainer.global_step - 1
        ):
            return
        model = self._average_model
        assert model is not None
        if self._lists is None or self._lists[2] is not pl_module:
            self._lists = self._tensor_lists(pl_module) + (pl_module,)
        shadow, current, _ = self._lists
        for s, c in zip(shadow, current):
            self._multi_avg(s, c, model.n_averaged)
        model.n_averaged += 1
        self._latest_update_step = trainer.global_step

    def _tensor_lists(
        self, pl_module: pl.LightningModule
    ) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """Averaged and current parameters + buffers, grouped by (device, dtype)."""
        model = self._average_model
        pairs = zip(
            itertools.chain(model.module.parameters(), model.module.buffers()),
            itertools.chain(pl_module.parameters(), pl_module.buffers()),
        )
        groups: dict[tuple, tuple[list, list]] = {}
        for a, c in pairs:
            group = groups.setdefault((a.device, a.dtype), ([], []))
            group[0].append(a.detach())
            group[1].append(c.detach())
        return [g[0] for g in groups.values()], [g[1] for g in groups.values()]

    def _multi_avg(
        self, shadow: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor
    ) -> None:
        # AveragedModel counts the initial copy as one average (see setup), so the paper's n is one less.
        n = int(n_averaged) - 1
        ema_update_(shadow, current, ema_decay(n, self.decay, self.warmup))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Create the average as a copy of the initial weights (the paper's shadow initialisation)."""
        super().setup(trainer, pl_module, stage)
        self._lists = None
        if self._average_model is not None:
            # AveragedModel would copy (not average) at its first update; marking the fresh copy as one
            # average makes the first update use the paper's d = min(decay, 1/10) against the init.
            self._average_model.n_averaged.fill_(1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the raw weights in the module (see the module docstring)."""

    @property
    def num_updates(self) -> int:
        """EMA updates made so far (the paper's ``n``)."""
        if self._average_model is None:
            return 0
        return int(self._average_model.n_averaged) - 1

    def averaged_module(self) -> pl.LightningModule:
        """The averaged copy of the LightningModule (valid after fit has started)."""
        if self._average_model is None:
            raise RuntimeError("the EMA has no average yet: it is created when trainer.fit starts")
        return self._average_model.module

    @contextlib.contextmanager
    def swapped(self, pl_module: pl.LightningModule) -> Iterator[pl.LightningModule]:
        """Context manager: ``pl_module`` holds the averaged weights inside, its own ones after."""
        if self._average_model is None:
            raise RuntimeError("the EMA has no average yet: it is created when trainer.fit starts")
        self._swap_models(pl_module)
        try:
            yield pl_module
        finally:
            self._swap_models(pl_module)

    def state_dict(self) -> dict[str, Any]:
        """Callback state saved in checkpoints (the averaged weights go in the checkpoint's state_dict)."""
        return {**super().state_dict(), "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the callback state; the configured ``decay``/``warmup`` stay as configured."""
        super().load_state_dict(state_dict)
