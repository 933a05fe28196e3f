"""One progress bar for a whole training run.

Lightning's bars restart at every epoch; with short epochs (the digits: 12 batches) a run shows hundreds of
bars and never how far training is. :class:`StepProgressBar` draws a single tqdm bar over the optimizer
steps, ``global_step`` out of ``trainer.max_steps`` (from the checkpoint's step after a resume), with
tqdm's rate and ETA and the latest losses (``train/loss``, ``val/loss``, ``val/bpd``) as a postfix. On a log
(stderr not a terminal) the bars print whole lines instead of carriage-return frames (:func:`progress_bar`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

__all__ = ["LogLines", "StepProgressBar", "on_terminal", "progress_bar"]


def on_terminal() -> bool:
    """Whether stderr, where the bars go, is a terminal (else a log file or a pipe)."""
    return sys.stderr.isatty()


class _Discard:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LogLines(tqdm):
    """tqdm for a log (stderr not a terminal): instead of carriage-return frames, one whole line (with the
    rate, the ETA and the postfix) on stderr per update that advances it by ``every`` or more, and at the
    end."""

    def __init__(self, *args: Any, every: int = 1, **kwargs: Any) -> None:
        kwargs.update(file=_Discard(), mininterval=0, dynamic_ncols=False, ncols=100)
        super().__init__(*args, **kwargs)
        self.every, self.shown = max(1, int(every)), self.n

    def update(self, n: float = 1) -> bool | None:
        out = super().update(n)
        if not self.disable and (
            self.n - self.shown >= self.every or (self.total and self.shown < self.n >= self.total)
        ):
            self.shown = self.n
            print(str(self), file=sys.stderr, flush=True)
        return out


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal, :class:`LogLines` on a log; nothing when not ``enabled``."""
    if enabled and not on_terminal():
        return LogLines(iterable, **kwargs)
    return tqdm(iterable, disable=not enabled, **kwargs)

#: logged metrics shown in the bar, with their short names
SHOWN = {"train/loss": "loss", "val/loss": "val_loss", "val/bpd": "val_bpd"}


class StepProgressBar(ProgressBar):
    """A single bar over the training steps with ETA and the loss (rank 0 only).

    Args:
        refresh_rate: redraw every ``refresh_rate`` optimizer steps (and at the end); 0 disables the bar.
    """

    def __init__(self, refresh_rate: int = 20) -> None:
        super().__init__()
        if int(refresh_rate) < 0:
            raise ValueError(f"refresh_rate must be >= 0, got {refresh_rate}")
        self.refresh_rate = int(refresh_rate)
        self._enabled = self.refresh_rate > 0
        self.bar: tqdm | None = None

    # ProgressBar's interface
    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = self.refresh_rate > 0

    def total_steps(self, trainer: pl.Trainer) -> int | None:
        """``trainer.max_steps``, or None when training is bounded by epochs only."""
        return int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bar = progress_bar(  # on a log: one line per update, i.e. per refresh_rate steps
            total=self.total_steps(trainer),
            initial=int(trainer.global_step),
            desc="training",
            unit="step",
            enabled=self.is_enabled and trainer.is_global_zero,
            smoothing=0.05,
            **({"dynamic_ncols": True} if on_terminal() else {}),
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bar is None:
            return
        step = int(trainer.global_step)
        done = self.bar.total is not None and step >= self.bar.total
        if step - self.bar.n >= self.refresh_rate or (done and step > self.bar.n):
            self.bar.set_postfix(self.postfix(trainer), refresh=False)
            self.bar.update(step - self.bar.n)

    def postfix(self, trainer: pl.Trainer) -> dict[str, str]:
        """The latest values of :data:`SHOWN` among the trainer's logged metrics."""
        metrics = trainer.callback_metrics
        return {short: f"{float(metrics[key]):.4g}" for key, short in SHOWN.items() if key in metrics}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.postfix(trainer), refresh=False)
            self.bar.update(int(trainer.global_step) - self.bar.n)
            self.bar.close()
            self.bar = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
