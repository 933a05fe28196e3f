"""``ScoreModel``: the LightningModule that trains a score network with denoising score matching.

It composes the math layer (an SDE, a network turned into a score by :class:`~scoresde.score.NetworkScore`,
:class:`~scoresde.losses.DSMLoss`) with Lightning: Adam with a linear learning-rate warm-up, gradient
clipping by global norm (Lightning's ``gradient_clip_val``), and a validation pass that logs the held-out
loss, bits/dim of a small batch, and saves a grid of samples. The EMA of the weights is the
:class:`~scoresde.train.ema.EMA` callback's job; Lightning swaps the averaged weights in for validation.

Everything needed to rebuild the model is stored as plain dicts in the hyper-parameters (network, SDE,
validation sampler), so ``ScoreModel.load_from_checkpoint(path)`` works without Hydra or the config.

Reproducibility: the loss noise (times ``t`` and Gaussian ``z``) of step ``k`` on rank ``r`` comes from a
generator seeded with ``(seed, r, k)`` -- no RNG state to save, so a resumed run draws exactly what the
uninterrupted one would have, on any number of processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from scoresde.losses import DSMLoss, NonFiniteLossError
from scoresde.quantization import bits_per_dim_from_logp
from scoresde.score import PARAMETERIZATIONS, NetworkScore

from .build import instantiate, network_from_config, plain

__all__ = ["VALIDATION_DEFAULTS", "ScoreModel", "TrainingDivergedError", "step_seed"]

log = logging.getLogger(__name__)


class TrainingDivergedError(NonFiniteLossError):
    """The loss or the gradients became NaN/inf; training stopped before the bad update was applied."""


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed mixed from ``(seed, rank, step, stream)`` (numpy ``SeedSequence``)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(rank), int(step), int(stream)]).generate_state(2)
    return int((int(state[0]) << 31 ^ int(state[1])) % 2**63)


#: the validation settings (``validation=`` of :class:`ScoreModel`, the ``validation`` config block) and
#: their defaults
VALIDATION_DEFAULTS: dict[str, Any] = {
    "num_samples": 64,
    "sample_every": 1,
    "bpd_examples": 0,
    "bpd_rtol": 1e-3,
    "solver": None,
    "bound_samples": 0,
}


class ScoreModel(pl.LightningModule):
    """Score-based generative model trained with continuous-time DSM.

    The app builds it from the ``module`` config block (``_target_: scoresde.train.ScoreModel``), with
    ``net``/``sde``/``validation`` from the groups of the same names and the data's shape, levels and range.

    Args:
        net: network config, ``{"_target_": "scoresde.nets.UNet", ...}`` (see ``conf/model/``).
        sde: SDE config, ``{"_target_": "scoresde.sde.VPSDE", ...}`` (see ``conf/sde/``).
        parameterization: ``"eps"`` (network predicts the noise) or ``"score"`` (see :mod:`scoresde.score`).
        loss: keyword arguments of :class:`~scoresde.losses.DSMLoss` (``eps``, ``weighting``, ``reduce``,
            ``time_sampling``).
        lr, betas, adam_eps, weight_decay: Adam (the paper: 2e-4, (0.9, 0.999), 1e-8, 0).
        warmup_steps: linear learning-rate warm-up, ``lr * min((k + 1) / warmup_steps, 1)`` at update
            ``k`` (0-based). The paper's code uses ``k / warmup_steps``, so its first update has learning
            rate 0 -- a wasted step; here the first update already moves. 0 disables the warm-up.
        seed: seeds the loss noise (see the module docstring).
        data_shape: per-example shape ``(C, H, W)`` or ``(D,)``.
        levels, data_range: quantization of the data (``levels=None`` for continuous data such as the
            2-D toys); validation bits/dim use them.
        validation: the validation pass (keys of :data:`VALIDATION_DEFAULTS`): ``num_samples`` images in
            the sample grid, drawn at every ``sample_every``-th validation with the sampler config
            ``solver`` (``None``: no grid); bits/dim (nats/dim for continuous data) of ``bpd_examples``
            examples of the first validation batch with the probability-flow ODE at ``bpd_rtol`` (0: none);
            ``bound_samples`` time samples per example of the variational bound on every validation batch
            (:func:`scoresde.bound.variational_bound`, logged as ``val/bound_bpd``, or
            ``val/bound_nll_per_dim`` for continuous data: that many network calls, no ODE; 0: off).
        sample_dir: where the validation grids go (default: ``<trainer.default_root_dir>/samples``).
        label_dropout: for a class-conditional network (``num_classes > 0``) trained on ``(x, y)``
            batches, the probability that a label is replaced by the null label (classifier-free
            guidance, Ho & Salimans 2022); unconditional networks ignore it.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        sde: Mapping[str, Any],
        *,
        parameterization: str = "eps",
        loss: Mapping[str, Any] | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] | list[float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 5000,
        seed: int = 0,
        data_shape: tuple[int, ...] | list[int] | None = None,
        levels: int | None = None,
        data_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        validation: Mapping[str, Any] | None = None,
        sample_dir: str | None = None,
        label_dropout: float = 0.1,
    ):
        super().__init__()
        net, sde, loss = plain(net), plain(sde), plain(loss or {})
        validation = _validation_settings(validation)
        _check_hparams(parameterization, lr, betas, adam_eps, weight_decay, warmup_steps, validation)
        self.save_hyperparameters(
            {
                "net": net,
                "sde": sde,
                "parameterization": parameterization,
                "loss": loss,
                "lr": float(lr),
                "betas": [float(b) for b in betas],
                "adam_eps": float(adam_eps),
                "weight_decay": float(weight_decay),
                "warmup_steps": int(warmup_steps),
                "seed": int(seed),
                "data_shape": None if data_shape is None else [int(s) for s in data_shape],
                "levels": None if levels is None else int(levels),
                "data_range": [float(v) for v in data_range],
                "validation": validation,
                "sample_dir": sample_dir,
                "label_dropout": float(label_dropout),
            }
        )
        try:
            self.net = network_from_config(net)
        except (ValueError, TypeError) as err:
            raise type(err)(f"network {net.get('_target_')}: {err}") from err
        self.sde = instantiate(sde)
        self.score_fn = NetworkScore(self.net, self.sde, parameterization)
        self.loss_fn = DSMLoss(**loss, check_finite=False)  # checked on the gradients, DDP-safe
        self._val_solver = instantiate(validation["solver"]) if validation["solver"] else None
        self._val_count = 0
        self._fit_start_step: int | None = None
        self._last_loss = float("nan")

    # ------------------------------------------------------------------------------------ helpers
    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """Per-example shape of the data, or None if unknown."""
        shape = self.hparams.get("data_shape")
        return None if shape is None else tuple(shape)

    @property
    def is_discrete(self) -> bool:
        """Whether the model's data are discrete (``levels`` set: bits/dim apply), as the data module's
        :attr:`~scoresde.data.base.ScoreDataModule.is_discrete`."""
        return self.hparams.get("levels") is not None

    def _generator(self, step: int, stream: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.hparams.seed, self.global_rank, step, stream))
        return g

    @staticmethod
    def _batch_tensor(batch: Any) -> torch.Tensor:
        return batch[0] if isinstance(batch, list | tuple) else batch

    # ------------------------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score ``grad_x log p_t(x)`` at times ``t`` (shape ``(B,)``)."""
        return self.score_fn(x, t)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """DSM loss of one batch with step-seeded noise."""
        x = self._batch_tensor(batch)
        score_fn = self._class_conditional_score(batch)
        loss = self.loss_fn(score_fn, self.sde, x, generator=self._generator(self.global_step, 0))
        self._last_loss = loss.detach()
        every = self._trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(
            1, every
        ) == 0:  # what the logger writes; skip Lightning's per-step cost
            self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _class_conditional_score(self, batch: Any):
        """The score given the batch's labels, each dropped to the null label with probability
        ``label_dropout`` (step-seeded), for a class-conditional network; else the plain score."""
        if not getattr(self.net, "num_classes", 0) or not isinstance(batch, list | tuple) or len(batch) < 2:
            return self.score_fn
        y = batch[1]
        drop = torch.rand(y.shape, generator=self._generator(self.global_step, 3), device=y.device)
        y = torch.where(drop < self.hparams.get("label_dropout", 0.1), self.net.null_label, y)
        return NetworkScore(lambda v, c: self.net(v, c, y), self.sde, self.hparams.parameterization)

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam with a per-step linear warm-up (LambdaLR)."""
        hp = self.hparams
        opt = torch.optim.Adam(
            self.net.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.adam_eps,
            weight_decay=hp.weight_decay,
        )
        warmup = int(hp.warmup_steps)

        def factor(step: int) -> float:
            return min((step + 1) / warmup, 1.0) if warmup > 0 else 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the global gradient norm to ``gradient_clip_val`` (None/0: no clipping) and stop with
        :class:`TrainingDivergedError` before the update if the norm is NaN/inf. Gradients are already
        all-reduced under DDP, so every rank stops at the same step (no rank hangs)."""
        if gradient_clip_algorithm not in (None, "norm"):
            raise ValueError(
                f"only gradient_clip_algorithm='norm' is supported, got {gradient_clip_algorithm!r}"
            )
        max_norm = float(gradient_clip_val) if gradient_clip_val else math.inf
        params = [p for p in self.net.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not bool(torch.isfinite(norm)):
            raise TrainingDivergedError(self._divergence_message(float(norm)))

    def _divergence_message(self, norm: float) -> str:
        step = self.global_step
        last = None
        trainer = self._trainer
        if trainer is not None and trainer.checkpoint_callback is not None:
            last = getattr(trainer.checkpoint_callback, "last_model_path", None) or None
        ckpt = (
            f"the last good checkpoint is {last} (it was not overwritten)"
            if last and Path(last).exists()
            else "no checkpoint was saved before it"
        )
        return (
            f"training diverged at step {step}: the loss is {float(self._last_loss):.6g}, the gradient norm "
            f"{norm}; the update was not applied and training stopped. {ckpt}. Lower the learning rate, "
            "raise the warm-up, check the data for NaN/inf, or resume from the checkpoint with ckpt_path=..."
        )

    def on_train_start(self) -> None:
        """Remember the step training (re)started at (after a resume: the checkpoint's step)."""
        self._fit_start_step = int(self.global_step)

    # ------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_count += 1

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Held-out loss with noise fixed per batch (comparable across validations); on the first
        batch also bits/dim of a few examples and the sample grid (with the EMA weights, which the
        EMA callback swaps in)."""
        x = self._batch_tensor(batch)
        loss = self.loss_fn(self.score_fn, self.sde, x, generator=self._generator(batch_idx, 1))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=x.shape[0])
        if self.hparams.validation["bound_samples"] > 0:
            self._validation_bound(x, batch_idx)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            val = self.hparams.validation
            if val["bpd_examples"] > 0:
                self._validation_bpd(x[: val["bpd_examples"]])
            if self._val_solver is not None and (self._val_count - 1) % val["sample_every"] == 0:
                if self.global_rank == 0:
                    self._validation_samples()
        return loss

    def _validation_bpd(self, x: torch.Tensor) -> None:
        from scoresde.likelihood import log_likelihood

        with torch.inference_mode(False), torch.enable_grad():
            res = log_likelihood(
                self.score_fn,
                self.sde,
                x.clone(),
                rtol=self.hparams.validation["bpd_rtol"],
                atol=self.hparams.validation["bpd_rtol"],
                generator=self._generator(0, 2),
            )
        logp = res.logp.to(x.device)
        dims = x[0].numel()
        if not self.is_discrete:
            self.log("val/nll_per_dim", (-logp / dims).mean(), sync_dist=True, batch_size=x.shape[0])
        else:
            bpd = bits_per_dim_from_logp(logp, dims, self.hparams.levels, tuple(self.hparams.data_range))
            self.log("val/bpd", bpd.mean(), prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def _validation_bound(self, x: torch.Tensor, batch_idx: int) -> None:
        from scoresde.bound import variational_bound

        eps = float(self.hparams.loss.get("eps", 1e-5))
        res = variational_bound(self.score_fn, self.sde, x, eps=eps, generator=self._generator(batch_idx, 3),
                                time_samples=self.hparams.validation["bound_samples"])
        dims = x[0].numel()
        if not self.is_discrete:
            self.log("val/bound_nll_per_dim", (res.nll / dims).mean(), sync_dist=True, batch_size=x.shape[0])
        else:
            bpd = bits_per_dim_from_logp(-res.nll, dims, self.hparams.levels, tuple(self.hparams.data_range))
            self.log("val/bound_bpd", bpd.mean(), prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def _validation_samples(self) -> None:
        from .images import log_png_to_loggers, save_samples_png

        shape = self.data_shape
        if shape is None:
            return
        n = self.hparams.validation["num_samples"]
        x = self._val_solver.sample(
            self.score_fn, self.sde, (n, *shape), seeds=list(range(n)), device=self.device
        )
        root = self.hparams.sample_dir or str(Path(self.trainer.default_root_dir) / "samples")
        path = Path(root) / f"val_step{self.global_step:07d}.png"
        save_samples_png(x.cpu(), path, levels=self.hparams.levels, data_range=tuple(self.hparams.data_range),
                         title=f"step {self.global_step}")
        log_png_to_loggers(self.loggers, "val/samples", path, self.global_step)
        log.info("validation samples at step %d: %s", self.global_step, path)

    # ------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Tag the checkpoint so loading can recognise (and check) a scoresde checkpoint."""
        checkpoint["scoresde"] = {
            "format": 1,
            "data_shape": self.hparams.get("data_shape"),
            "net_target": self.hparams.net.get("_target_"),
            "sde_target": self.hparams.sde.get("_target_"),
        }


def _validation_settings(validation: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(plain(validation or {}))
    unknown = sorted(set(given) - set(VALIDATION_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown validation setting(s) {', '.join(unknown)}; valid: {', '.join(VALIDATION_DEFAULTS)}"
        )
    return {**VALIDATION_DEFAULTS, **given}


def _check_hparams(parameterization, lr, betas, adam_eps, weight_decay, warmup_steps, validation) -> None:
    problems = []
    if parameterization not in PARAMETERIZATIONS:
        problems.append(
            f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {parameterization!r}"
        )
    if not float(lr) > 0:
        problems.append(f"lr must be > 0, got {lr}")
    if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        problems.append(f"betas must be two numbers in [0, 1), got {list(betas)}")
    if not float(adam_eps) > 0:
        problems.append(f"adam_eps must be > 0, got {adam_eps}")
    if float(weight_decay) < 0:
        problems.append(f"weight_decay must be >= 0, got {weight_decay}")
    if int(warmup_steps) < 0:
        problems.append(f"warmup_steps must be >= 0, got {warmup_steps}")
    for key, low in (("num_samples", 1), ("sample_every", 1), ("bpd_examples", 0)):
        if int(validation[key]) < low:
            problems.append(f"validation.{key} must be >= {low}, got {validation[key]}")
    if not float(validation["bpd_rtol"]) > 0:
        problems.append(f"validation.bpd_rtol must be > 0, got {validation['bpd_rtol']}")
    if problems:
        raise ValueError("invalid ScoreModel settings: " + "; ".join(problems))
