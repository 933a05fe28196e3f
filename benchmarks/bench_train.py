"""Training throughput: the ScoreModel LightningModule (as the app runs it) against the same step in a plain
PyTorch loop -- same network (the main job's U-Net), data (digits loader, batch 128), loss (DSM with
step-seeded noise), optimizer (Adam + linear warm-up), gradient clipping (global norm 1) and EMA (the paper's,
fused foreach update).

    python benchmarks/bench_train.py [--steps 300] [--repeats 3] [--threads 2] [--model unet|mlp]

Prints a table of steady-state steps/s (the first ``--skip`` steps of every run are excluded) and the ratio
Lightning / plain (target <= 1.10). Runs alternate between the two loops so a change in machine load hits
both; the table states the threads used and the load average (a shared machine inflates the spread).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from scoresde.tasks import compose_config
from scoresde.tasks.common import data_info, datamodule_from_config, score_model_from_config
from scoresde.tasks.trainer import build_trainer
from scoresde.train.ema import ema_decay, ema_update_


class _Clock(pl.Callback):
    """Wall time between the end of step ``skip`` and the end of the last step."""

    def __init__(self, skip: int):
        self.skip, self.t0, self.t1, self.n = skip, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.skip:
            self.t0 = time.perf_counter()
        elif trainer.global_step > self.skip:
            self.t1, self.n = time.perf_counter(), trainer.global_step - self.skip


def _config(args, run_dir):
    overrides = [
        f"trainer.max_steps={args.steps}",
        "trainer.val_check_interval=1000000",
        "task.sample=false",
        "task.likelihood=false",
        "checkpoint.every_n_steps=1000000",
        "trainer.enable_model_summary=false",
    ]
    if args.model == "mlp":
        overrides += ["experiment=toy2d", "data.n_train=20000"]
    if args.bare:
        overrides += ["logger=none", "progress_bar_refresh_rate=0"]
    return compose_config(*overrides, output_dir=run_dir)


def _setup(args, run_dir):
    """The config, data module and fresh model both loops start from (same seed)."""
    cfg = _config(args, run_dir)
    torch.manual_seed(0)
    dm = datamodule_from_config(cfg)
    return cfg, dm, score_model_from_config(cfg, data_info(dm))


def lightning_run(args) -> float:
    """Steady-state steps/s of trainer.fit with the app's trainer (callbacks, logger, progress bar)."""
    with tempfile.TemporaryDirectory() as d:
        cfg, dm, model = _setup(args, d)
        trainer, _, _ = build_trainer(cfg, run_dir=Path(d), ckpt_dir=Path(d))
        clock = _Clock(args.skip)
        trainer.callbacks.append(clock)
        trainer.fit(model, datamodule=dm)
        return clock.n / (clock.t1 - clock.t0)


def plain_run(args) -> float:
    """Steady-state steps/s of a hand-written loop doing the same work."""
    with tempfile.TemporaryDirectory() as d:
        cfg, dm, model = _setup(args, d)
        model.train()
        params = list(model.net.parameters())
        opt = torch.optim.Adam(
            params, lr=cfg.module.lr, betas=tuple(cfg.module.betas), eps=cfg.module.adam_eps
        )
        warm = int(cfg.module.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min((k + 1) / warm, 1.0) if warm else 1.0)
        shadow = [p.detach().clone() for p in params]
        step, epoch, t0 = 0, 0, None
        loader = dm.train_dataloader()
        while step < args.steps:
            loader.sampler.set_epoch(epoch)
            epoch += 1
            for x in loader:
                loss = model.loss_fn(model.score_fn, model.sde, x, generator=model._generator(step, 0))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val)
                if not math.isfinite(float(norm)):
                    raise FloatingPointError("diverged")
                opt.step()
                sched.step()
                ema_update_(shadow, [p.detach() for p in params], ema_decay(step, cfg.ema.decay))
                step += 1
                if step == args.skip:
                    t0 = time.perf_counter()
                if step >= args.steps:
                    break
        return (step - args.skip) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=20, help="warm-up steps excluded from the timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["unet", "mlp"], default="unet")
    parser.add_argument(
        "--bare", action="store_true", help="no logger and no progress bar in the Lightning run"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    plain, light = [], []
    for _ in range(args.repeats):
        plain.append(plain_run(args))
        light.append(lightning_run(args))
    load = os.getloadavg()
    p, lt = statistics.median(plain), statistics.median(light)
    print(
        f"\ntraining throughput, {args.model}, {args.steps - args.skip} timed steps x {args.repeats} "
        "repeats, "
        f"torch threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"({os.cpu_count()} cores), "
        + ("bare Lightning" if args.bare else "app trainer (CSV logger, progress bar)")
    )
    print(f"{'loop':<12}{'median steps/s':>16}{'runs':>40}")
    print(f"{'plain':<12}{p:>16.2f}{'  '.join(f'{v:.2f}' for v in plain):>40}")
    print(f"{'lightning':<12}{lt:>16.2f}{'  '.join(f'{v:.2f}' for v in light):>40}")
    print(f"time per step, Lightning / plain: {p / lt:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
