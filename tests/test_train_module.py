"""The ScoreModel LightningModule and the EMA callback: the paper's EMA with warm-up, the learning-rate
warm-up, gradient clipping, step-seeded loss noise, divergence detection."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from scoresde.train import EMA, ScoreModel, TrainingDivergedError, ema_decay

pytestmark = pytest.mark.usefixtures("one_thread")

NET = {"_target_": "scoresde.nets.MLP", "dim": 2, "hidden": 16, "depth": 1, "embed_dim": 8}
SDE = {"_target_": "scoresde.sde.VPSDE"}


def _model(**kw) -> ScoreModel:
    kw = {"lr": 1e-2, "warmup_steps": 0, "data_shape": (2,), **kw}
    return ScoreModel(NET, SDE, **kw)


def _loader(n: int = 64, batch: int = 16) -> DataLoader:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    return DataLoader(x, batch_size=batch)


def _trainer(steps: int, callbacks=(), **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        limit_val_batches=0,
        **kw,
    )


class _Recorder(pl.Callback):
    """Raw parameters after every optimizer step (before the EMA callback's update order matters not:
    parameters are those of the step)."""

    def __init__(self):
        self.params: list[list[torch.Tensor]] = []
        self.init: list[torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module):
        self.init = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append([p.detach().clone() for p in pl_module.parameters()])


def test_ema_decay_warmup_formula():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay(10**6, 0.999) == 0.999
    assert ema_decay(0, 0.999, warmup=False) == 0.999
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_callback_reproduces_the_papers_update(warmup):
    torch.manual_seed(0)
    model = _model()
    ema, rec = EMA(decay=0.9, warmup=warmup), _Recorder()
    _trainer(7, [ema, rec]).fit(model, _loader())
    shadow = [p.clone() for p in rec.init]  # the paper's shadow starts at the initial weights
    for n, params in enumerate(rec.params):
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        shadow = [d * s + (1 - d) * p for s, p in zip(shadow, params)]
    averaged = list(ema.averaged_module().parameters())
    assert ema.num_updates == 7
    for s, a in zip(shadow, averaged):
        torch.testing.assert_close(a, s, rtol=1e-5, atol=1e-6)
    # the module itself keeps the raw weights after training (see EMA docstring)
    for p, r in zip(model.parameters(), rec.params[-1]):
        torch.testing.assert_close(p, r)
    with ema.swapped(model):
        for p, s in zip(model.parameters(), shadow):
            torch.testing.assert_close(p, s, rtol=1e-5, atol=1e-6)
    for p, r in zip(model.parameters(), rec.params[-1]):
        torch.testing.assert_close(p, r)


def test_linear_warmup_and_adam_defaults():
    model = ScoreModel(NET, SDE, data_shape=(2,))
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0.0
    assert group["lr"] == pytest.approx(2e-4 / 5000)  # first update already moves (see docstring)
    for _ in range(4999):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "lr"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"parameterization": "x"}, "parameterization"),
        ({"betas": (0.9, 1.5)}, "betas"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_gradient_clipping_to_global_norm():
    model = _model()
    for p in model.net.parameters():
        p.grad = torch.full_like(p, 10.0)
    model.configure_gradient_clipping(None, gradient_clip_val=1.0)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.net.parameters()))
    assert total == pytest.approx(1.0, rel=1e-4)


def test_loss_noise_is_a_function_of_seed_and_step():
    a, b = _model(seed=3), _model(seed=3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 2)
    la = a.loss_fn(a.score_fn, a.sde, x, generator=a._generator(5, 0))
    lb = b.loss_fn(b.score_fn, b.sde, x, generator=b._generator(5, 0))
    lc = b.loss_fn(b.score_fn, b.sde, x, generator=b._generator(6, 0))
    assert la == lb and la != lc


def test_nonfinite_gradient_stops_before_the_update():
    model = _model()

    class Poison(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 3:
                next(pl_module.net.parameters()).grad.fill_(math.nan)

    rec = _Recorder()
    with pytest.raises(TrainingDivergedError, match="diverged at step 3") as err:
        _trainer(10, [Poison(), rec]).fit(model, _loader())
    assert "no checkpoint was saved" in str(err.value)
    assert len(rec.params) == 3
    for p, r in zip(model.parameters(), rec.params[-1]):  # the bad update was not applied
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, r)
