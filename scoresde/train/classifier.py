"""``ClassifierModel``: the LightningModule that trains a noise-conditional classifier ``p_t(y | x_t)``
for classifier guidance, on data perturbed by the same SDE as the score model:

    loss = E_{t ~ U(eps, T), x_t ~ p_0t(. | x_0)} [ -log softmax(net(x_t, c(t)))_y ],   c = sde.noise_label.

The data modules yield images only; :func:`labelled_loader` pairs the same (seeded, dequantized)
batches with their class labels. Weights are saved with their configs (:func:`save_classifier`) and
loaded without Hydra (:func:`load_classifier`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from scoresde.data.base import BatchedSplit, EpochBatchSampler

from .build import instantiate, network_from_config, plain
from .checkpoint import atomic_torch_save
from .module import step_seed

__all__ = ["ClassifierModel", "labelled_loader", "save_classifier", "load_classifier"]


class _LabelledSplit(Dataset):
    """``(indices, batch_seed) -> (images, labels)``: the data module's batch and its labels."""

    def __init__(self, images: BatchedSplit, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        return self.images[item], self.labels[item[0]]


def labelled_loader(dm, split: str, train: bool) -> DataLoader:
    """Batches ``(x, y)`` of a split of a labelled data module (shuffled and augmented when ``train``)."""
    labels = dm.labels(split)
    if labels is None:
        raise ValueError(f"{dm.name or type(dm).__name__} has no class labels: a classifier cannot be "
                         "trained on it (use a labelled data set such as data=digits)")
    data = dm._loader_data(split)
    batch = dm.batch_size if train else dm.eval_batch_size
    sampler = EpochBatchSampler(len(data), batch, shuffle=train, drop_last=False, seed=dm.seed,
                                stream=f"{split}-labelled")
    return DataLoader(_LabelledSplit(BatchedSplit(data, dm._batch_transform(), augment=train), labels),
                      batch_size=None, sampler=sampler, num_workers=dm.num_workers)


class ClassifierModel(pl.LightningModule):
    """Noise-conditional classifier trained by cross-entropy on SDE-perturbed data.

    Args:
        net: classifier config, ``{"_target_": "scoresde.nets.classifier.NoiseConditionalClassifier", ...}``.
        sde: SDE config (the score model's).
        lr, weight_decay, warmup_steps: AdamW with a linear warm-up.
        eps: smallest training time.
        seed: seeds the times and noise of each step (as the score model's loss).
    """

    def __init__(self, net: Mapping[str, Any], sde: Mapping[str, Any], *, lr: float = 2e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 100, eps: float = 1e-5, seed: int = 0):
        super().__init__()
        if not float(lr) > 0 or int(warmup_steps) < 0 or not 0 < float(eps) < 1:
            raise ValueError(f"invalid classifier settings: lr={lr} (> 0), warmup_steps={warmup_steps} "
                             f"(>= 0), eps={eps} (in (0, 1))")
        self.save_hyperparameters({"net": plain(net), "sde": plain(sde), "lr": float(lr),
                                   "weight_decay": float(weight_decay), "warmup_steps": int(warmup_steps),
                                   "eps": float(eps), "seed": int(seed)})
        self.net = network_from_config(self.hparams.net)
        self.sde = instantiate(self.hparams.sde)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits of ``p_t(y | x)``, shape ``(B, K)``."""
        return self.net(x, self.sde.noise_label(t))

    def _loss(self, batch, generator: torch.Generator, t: float | None = None):
        x, y = batch
        if t is None:
            t = self.hparams.eps + (self.sde.T - self.hparams.eps) * torch.rand(
                x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        else:
            t = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        x_t, _, _ = self.sde.marginal_sample(x, t, generator=generator)
        logits = self(x_t, t)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(step_seed(self.hparams.seed, self.global_rank,
                                                                         step, stream))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss(batch, self._generator(self.global_step, 0))
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=batch[1].shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Held-out loss and accuracy at random times, and the accuracy on nearly clean data."""
        loss, acc = self._loss(batch, self._generator(batch_idx, 1))
        _, acc0 = self._loss(batch, self._generator(batch_idx, 2), t=self.hparams.eps)
        self.log_dict({"val/loss": loss, "val/acc": acc, "val/acc_t0": acc0}, prog_bar=True,
                      sync_dist=True, batch_size=batch[1].shape[0])
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = hp.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min((k + 1) / max(warmup, 1), 1.0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def save_classifier(model: ClassifierModel, path: str | Path, **extra: Any) -> None:
    """The classifier's weights with its network and SDE configs (atomic), like the score weights."""
    atomic_torch_save({"kind": "classifier", "net": model.hparams.net, "sde": model.hparams.sde,
                       "global_step": int(model.global_step), **extra,
                       "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()}}, path)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu"):
    """``(net, sde)`` from :func:`save_classifier`'s file (the network in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with task=train_classifier")
    blob = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(blob, dict) or blob.get("kind") != "classifier":
        raise ValueError(f"{path} is not a classifier's weights file (written by task=train_classifier)")
    net = network_from_config(blob["net"])
    net.load_state_dict(blob["state_dict"])
    return net.eval(), instantiate(blob["sde"])
