"""Maximum-likelihood training on the digits: today's main job against the likelihood weighting, side by side.

    python benchmarks/ml_training.py [--max-time 510] [--max-steps 8000] [--threads 2]
        [--configs sigma2_stratified likelihood_uniform likelihood_importance]
        [--num-samples 1000] [--seed-sets 3] [--sampler-steps 1000] [--bound-samples 100]
        [--out benchmarks/results/ml_training]

Trains the main job (`python -m scoresde.run`, the digits U-Net) once per configuration, one after the other
in this one process, each with the same budget (default: the main job's `trainer.max_time` of 8.5 minutes and
8,000 steps), then with its EMA weights reports:

* the test bits/dim through the probability-flow ODE (the main job's setting: Rademacher, RK45 at rtol 1e-3,
  all 297 test images) and the variational bound on the same dequantized images (`likelihood.bound`,
  `--bound-samples` importance-sampled times per image);
* sample quality: KID and FD in the digits classifier's feature space against the 1,500 training images, for
  `--seed-sets` disjoint sets of `--num-samples` samples (the main job's Euler-Maruyama sampler with
  `--sampler-steps` steps), mean and spread over the sets;
* the steps reached within the budget and the training wall time.

Configurations (`module.loss` of the app):

* `sigma2_stratified`: today's default job (sigma^2 weighting, stratified t);
* `likelihood_uniform`: `weighting=likelihood time_sampling=uniform` (the likelihood weighting alone);
* `likelihood_importance`: `experiment=digits_likelihood` (likelihood weighting, t importance-sampled from
  g^2/s^2 and stratified).

A smaller budget (e.g. `--max-time 60 --max-steps 600 --num-samples 200 --sampler-steps 100`) gives a quick
run that exercises everything; its numbers say nothing about the 10-minute goal. On a shared machine,
`--max-time 0 --max-steps N` gives every configuration the same number of steps instead (a fair comparison
of the losses, whose steps cost the same, when the machine's speed drifts between the runs). Each run's
directory (checkpoint, logs) is kept under `--out`, with the table (`table.md`), the numbers (`results.json`)
and a grid of 64 samples per configuration (`samples_<configuration>.png`). Timings on a shared machine
drift: the header records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from scoresde.solvers import EulerMaruyama
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import datamodule_from_config
from scoresde.tasks.evaluate import evaluation_seed_sets, image_quality
from scoresde.tasks.sample import generate
from scoresde.train import load_score_model
from scoresde.train.images import save_samples_png

#: name -> app overrides
CONFIGS = {
    "sigma2_stratified": [],
    "likelihood_uniform": ["module.loss.weighting=likelihood", "module.loss.time_sampling=uniform"],
    "likelihood_importance": ["experiment=digits_likelihood"],
}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--max-time", type=int, default=510,
                   help="training seconds per run (main job: 510); 0: no time cap, --max-steps for every run")
    p.add_argument("--max-steps", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=1000, help="samples per seed set")
    p.add_argument("--seed-sets", type=int, default=3)
    p.add_argument("--sampler-steps", type=int, default=1000, help="Euler-Maruyama steps (main job: 1000)")
    p.add_argument("--bound-samples", type=int, default=100, help="times per image of the variational bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ml_training"))
    return p.parse_args()


def _max_time(seconds: int) -> str:
    """``DD:HH:MM:SS`` for Lightning's ``max_time``."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"00:{h:02d}:{m:02d}:{s:02d}"


def run_config(name: str, args: argparse.Namespace) -> dict:
    """Train one configuration with the budget and evaluate it; returns its table row."""
    run = args.out / name
    cfg = compose_config(
        *CONFIGS[name],
        f"seed={args.seed}",
        f"threads={args.threads}",
        f"trainer.max_steps={args.max_steps}",
        f"trainer.max_time={_max_time(args.max_time) if args.max_time > 0 else 'null'}",
        "task.sample=false",
        "likelihood.bound=true",
        f"likelihood.bound_samples={args.bound_samples}",
        "progress_bar_refresh_rate=100",
        output_dir=run,
    )
    print(f"== {name}: {' '.join(CONFIGS[name]) or '(the default job)'} -> {run}", flush=True)
    metrics = run_task(cfg)
    like = metrics["likelihood"]
    model = load_score_model(run / "checkpoints" / "last.ckpt")
    torch.set_num_threads(args.threads)
    dm = datamodule_from_config(cfg)
    solver = EulerMaruyama(steps=args.sampler_steps)
    t0 = time.perf_counter()
    sets = [generate(model, solver, seeds, 1000)[0] for seeds in
            evaluation_seed_sets(args.seed_sets, args.num_samples, args.seed)]
    sample_seconds = time.perf_counter() - t0
    save_samples_png(sets[0][:64], args.out / f"samples_{name}.png", levels=17, data_range=(-1.0, 1.0))
    ecfg = {"feature_network": "digits", "reference_split": "train", "data_floor": True, "kid_subsets": 50}
    q = image_quality(sets, dm, ecfg, levels=17, data_range=(-1.0, 1.0), seed=args.seed)
    return {
        "config": name,
        "overrides": CONFIGS[name],
        "steps": metrics["global_step"],
        "train_seconds": metrics["train_seconds"],
        "stopped_by_max_time": metrics["stopped_by_max_time"],
        "bpd": like["bpd"],
        "bpd_sem": like["bpd_sem"],
        "bound_bpd": like["bound"]["bpd"],
        "bound_bpd_sem": like["bound"]["bpd_sem"],
        "fd": q["fid"],
        "kid": q["kid"],
        "confidence": q.get("confidence", {}).get("mean_max_prob"),
        "fd_data_floor": q["data_floor"]["fid"],
        "sample_seconds": sample_seconds,
    }


def _spread(d: dict, fmt: str) -> str:
    std = d.get("std")
    return f"{d['mean']:{fmt}} +- {std:{fmt}}" if std is not None else f"{d['mean']:{fmt}}"


def table(rows: list[dict]) -> str:
    head = ("| configuration | steps | train s | test bits/dim (ODE) | bound bits/dim | FD (digits features) "
            "| KID | confidence |\n|---|---|---|---|---|---|---|---|")
    lines = [
        f"| {r['config']} | {r['steps']} | {r['train_seconds']:.0f} | {r['bpd']:.3f} +- {r['bpd_sem']:.3f} "
        f"| {r['bound_bpd']:.3f} +- {r['bound_bpd_sem']:.3f} | {_spread(r['fd'], '.2f')} "
        f"| {_spread(r['kid'], '.4f')} | {r['confidence']:.3f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main() -> None:
    args = _parse()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    rows = [run_config(name, args) for name in args.configs]
    header = (
        f"digits, main job's model; budget {f'{args.max_time} s' if args.max_time > 0 else 'no time cap'} / "
        f"{args.max_steps} steps per run, "
        f"{args.threads} threads, seed {args.seed}; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. "
        f"bits/dim: 297 test images, 17 levels (ODE: Rademacher, RK45 rtol 1e-3; bound: {args.bound_samples} "
        f"importance-sampled times per image), +- standard error. FD/KID: {args.seed_sets} sets of "
        f"{args.num_samples} samples (Euler-Maruyama, {args.sampler_steps} steps) against the 1,500 training "
        f"images, mean +- std over the sets (real test images: FD {rows[0]['fd_data_floor']:.2f})."
    )
    text = header + "\n\n" + table(rows)
    print("\n" + text)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"args": vars(args), "header": header, "rows": rows}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
