"""Accelerator figures for the paper's CIFAR-10 setup (DDPM++ cont., ``experiment=cifar10_vp_ddpmpp_cont``):

* training steps/s and peak memory at batch 128, as the app trains (Lightning, EMA, gradient clipping), in
  fp32, TF32 and bf16 autocast, each without and with ``torch.compile`` of the network;
* sampling throughput (samples/s) with PC at 1,000 steps and with the fastest sampler the library has;
* likelihood (probability-flow ODE, the paper's tolerance 1e-5) of 256 images, images/s;
* DDP across all visible GPUs (one process per GPU, global batch 128): steps/s and the scaling efficiency.

    python benchmarks/gpu_scale.py [--steps 30] [--batch 128] [--json out.json]
    python benchmarks/gpu_scale.py --tiny        # a tiny network and counts: checks the script runs (CPU)

Without a GPU it runs the tiny configuration and says so: real figures need a GPU. The network is
randomly initialised and the data random (throughput does not depend on either); the likelihood is timed
on random images. Anchor: the paper's code reports about 0.56 s per training step for NCSN++ on 4 V100s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from scoresde.data.base import per_process_batch_size
from scoresde.tasks import compose_config
from scoresde.tasks.common import score_model_from_config, solver_from_config
from scoresde.tasks.sample import generate
from scoresde.tasks.trainer import build_trainer

EXPERIMENT = "experiment=cifar10_vp_ddpmpp_cont"
#: the tiny configuration: the same network family, 16x16 images, a few channels
TINY_MODEL = ["model.nf=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1", "model.attn_resolutions=[8]",
              "model.image_size=16"]
FAST_SAMPLERS = ("dpm_solver", "ddim", "heun", "ode")  # the first that the library configures is used
PRECISIONS = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed"}
DDP_TAG = "GPU_SCALE_DDP "


def _config(args, *extra: str, out: str | None = None):
    over = [EXPERIMENT, "logger=none", "progress_bar_refresh_rate=0", "trainer.enable_model_summary=false",
            "trainer.val_check_interval=1000000000", "trainer.limit_val_batches=0",
            "checkpoint.every_n_steps=1000000000", f"trainer.max_steps={args.warmup + args.steps}",
            f"data.batch_size={args.batch}", f"trainer.accelerator={'gpu' if args.gpu else 'cpu'}"]
    over += TINY_MODEL if args.tiny else []
    return compose_config(*over, *extra, output_dir=out)


def _info(args) -> dict:
    size = 16 if args.tiny else 32
    return {"shape": (3, size, size), "levels": 256, "data_range": (-1.0, 1.0)}


def _loader(args, world: int = 1) -> DataLoader:
    """Random model-space images, ``batch / world`` per process (the app's global-batch semantics)."""
    n = args.batch * (args.warmup + args.steps + 1)
    x = torch.rand((n, *_info(args)["shape"]), generator=torch.Generator().manual_seed(0)) * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=per_process_batch_size(args.batch, world), shuffle=False)


class _Clock(pl.Callback):
    """Wall time of the steps after the first ``skip`` (warm-up, compilation)."""

    def __init__(self, skip: int):
        self.skip, self.t0, self.t1, self.n = skip, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.global_step == self.skip:
            self.t0 = time.perf_counter()
        elif trainer.global_step > self.skip:
            self.t1, self.n = time.perf_counter(), trainer.global_step - self.skip

    def steps_per_s(self) -> float:
        return self.n / (self.t1 - self.t0) if self.n else float("nan")


@contextlib.contextmanager
def _tf32(enabled: bool):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _model(args, cfg):
    torch.manual_seed(0)
    model = score_model_from_config(cfg, _info(args))
    if args.compile_now:
        model.net.compile(backend=args.compile_backend)  # in place: the EMA copy keeps the module type
    return model


def train_row(args, precision: str, compiled: bool, trainer_extra: tuple[str, ...] = (), world: int = 1):
    """Steady-state training steps/s and peak memory of ``trainer.fit`` as the app builds it."""
    args.compile_now = compiled
    with tempfile.TemporaryDirectory() as d, _tf32(precision == "tf32"):
        cfg = _config(args, f"trainer.precision={PRECISIONS[precision]}", *trainer_extra, out=d)
        model = _model(args, cfg)
        trainer, _, _ = build_trainer(cfg, Path(d), Path(d) / "checkpoints")
        clock = _Clock(args.warmup)
        trainer.callbacks.append(clock)
        if args.gpu:
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(model, train_dataloaders=_loader(args, world))
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.gpu else None
        return {"precision": precision, "compile": compiled, "steps_per_s": clock.steps_per_s(),
                "peak_gib": peak, "rank": trainer.global_rank}


def sampling_rows(args) -> list[dict]:
    """Samples/s with PC at ``--pc-steps`` steps and with the fastest configured sampler."""
    rows = []
    args.compile_now = False
    cfg = _config(args)
    model = _model(args, cfg).to("cuda" if args.gpu else "cpu").eval()
    seeds = list(range(args.samples))
    for name, steps in (("pc", args.pc_steps), (_fastest(), None)):
        extra = [] if steps is None else [f"solver.steps={steps}"]
        solver = solver_from_config(compose_config(f"solver={name}", *extra))  # the solver's own defaults
        generate(model, solver, seeds[: min(2, len(seeds))], batch_size=args.samples)  # warm-up
        _sync(args)
        x, stats = generate(model, solver, seeds, batch_size=args.samples)
        rows.append({"sampler": name, "steps": steps or "default",
                     "nfe": stats["nfe_per_batch"], "samples_per_s": len(seeds) / stats["seconds"]})
    return rows


def _fastest() -> str:
    from hydra import compose, initialize_config_module

    with initialize_config_module("scoresde.conf", version_base="1.3"):
        for name in FAST_SAMPLERS:
            with contextlib.suppress(Exception):
                compose("config", overrides=[f"solver={name}"])
                return name
    return "ode"


def likelihood_row(args) -> dict:
    """Images/s of the exact likelihood (probability-flow ODE + Hutchinson) of ``--images`` images."""
    from scoresde.likelihood import bits_per_dim

    args.compile_now = False
    cfg = _config(args)
    model = _model(args, cfg).to("cuda" if args.gpu else "cpu").eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.images, *_info(args)["shape"]), generator=g).to(model.device)
    _sync(args)
    t0 = time.perf_counter()
    res = bits_per_dim(model.score_fn, model.sde, x, rtol=args.rtol, atol=args.rtol,
                       seeds=list(range(args.images)))
    _sync(args)
    seconds = time.perf_counter() - t0
    return {"images": args.images, "rtol": args.rtol, "nfe": int(res.nfe), "seconds": seconds,
            "images_per_s": args.images / seconds}


def ddp_row(args, devices: int) -> dict | None:
    """Steps/s of one fp32 training on ``devices`` processes (a subprocess: Lightning starts the others)."""
    cmd = [sys.executable, __file__, "--ddp-worker", str(devices), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch)] + (["--tiny"] if args.tiny else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.ddp_timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(DDP_TAG)]
    if proc.returncode or not lines:
        print(f"DDP on {devices} devices failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[0][len(DDP_TAG):])


def _ddp_worker(args) -> None:
    devices = args.ddp_worker
    row = train_row(args, "fp32", False, ("trainer=ddp", f"trainer.devices={devices}"), world=devices)
    if row["rank"] == 0:
        print(DDP_TAG + json.dumps({**row, "devices": devices}), flush=True)


def _sync(args) -> None:
    if args.gpu:
        torch.cuda.synchronize()


def _fmt(v, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny network and counts (the default without a GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per row (30; tiny: 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (10; tiny: 2)")
    p.add_argument("--batch", type=int, default=None, help="global training batch (128; tiny: 8)")
    p.add_argument("--samples", type=int, default=None, help="samples per sampler (256; tiny: 4)")
    p.add_argument("--pc-steps", type=int, default=None, help="PC steps (1000; tiny: 5)")
    p.add_argument("--images", type=int, default=None, help="images for the likelihood (256; tiny: 2)")
    p.add_argument("--rtol", type=float, default=None, help="likelihood ODE tolerance (1e-5; tiny: 1e-2)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (inductor)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--ddp", type=int, default=None,
                   help="DDP processes (default: all visible GPUs when there are >= 2, else no DDP row)")
    p.add_argument("--ddp-timeout", type=float, default=1800)
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--ddp-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.gpu = torch.cuda.is_available()
    args.tiny = args.tiny or not args.gpu
    defaults = dict(steps=(30, 3), warmup=(10, 2), batch=(128, 8), samples=(256, 4), pc_steps=(1000, 5),
                    images=(256, 2), rtol=(1e-5, 1e-2))
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.ddp_worker:
        _ddp_worker(args)
        return {}

    device = torch.cuda.get_device_name(0) if args.gpu else "CPU"
    print(f"# gpu_scale on {device} ({torch.cuda.device_count()} GPU(s) visible), torch {torch.__version__}")
    if args.tiny:
        print("# TINY configuration (16x16 images, nf=16, a few steps): it checks that the benchmark runs;"
              " the real figures need a GPU" + ("" if args.gpu else " (none here)"))
    print("# anchor: the paper's code reports ~0.56 s per training step for NCSN++ on 4 V100s\n")
    result: dict = {"device": device, "tiny": args.tiny, "batch": args.batch, "train": []}
    print(f"training, batch {args.batch}: {'precision':>9} {'compile':>8} {'steps/s':>9} {'s/step':>8} "
          f"{'peak GiB':>9}")
    for compiled in (False, True) if not args.no_compile else (False,):
        for precision in PRECISIONS:
            if precision == "tf32" and not args.gpu:
                continue  # TF32 is a GPU mode
            row = train_row(args, precision, compiled)
            result["train"].append(row)
            print(f"{'':26}{precision:>9} {str(compiled):>8} {row['steps_per_s']:9.2f} "
                  f"{1 / row['steps_per_s']:8.3f} {_fmt(row['peak_gib']):>9}", flush=True)
    result["sampling"] = sampling_rows(args)
    for row in result["sampling"]:
        print(f"sampling {row['sampler']:>10} (steps: {row['steps']}): {row['nfe']:.0f} score evaluations, "
              f"{row['samples_per_s']:.2f} samples/s", flush=True)
    result["likelihood"] = likelihood_row(args)
    lk = result["likelihood"]
    print(f"likelihood of {lk['images']} images (rtol {lk['rtol']:g}): {lk['nfe']} score evaluations, "
          f"{lk['seconds']:.1f} s, {lk['images_per_s']:.2f} images/s", flush=True)
    devices = args.ddp if args.ddp is not None else (torch.cuda.device_count() if args.gpu else 0)
    if devices >= 2:
        row = ddp_row(args, devices)
        result["ddp"] = row
        if row is not None:
            single = next(r["steps_per_s"] for r in result["train"] if r["precision"] == "fp32")
            row["scaling_efficiency"] = row["steps_per_s"] / single  # global batch fixed: ideal = devices
            print(f"DDP on {devices} {'GPUs' if args.gpu else 'CPU processes'}, global batch {args.batch}: "
                  f"{row['steps_per_s']:.2f} steps/s = {row['steps_per_s'] / single:.2f}x one device "
                  f"(ideal {devices}x)")
    else:
        print("DDP: fewer than 2 GPUs visible, no DDP row (--ddp N to force N processes)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
