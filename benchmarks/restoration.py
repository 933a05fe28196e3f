"""Image restoration on the 8x8 digits with a trained score model, end to end through the app (issue 24).

Three measurements ``y = A x + sigma_y n`` of the first ``--images`` test digits, each restored by every
method of ``scoresde.restoration`` (``task=evaluate``, ``--seed-sets`` seed sets, one restoration per image):

* ``superres``: 2x super-resolution, 8x8 from the 4x4 block means, noiseless;
* ``deblur``: Gaussian blur of 1 pixel, ``sigma_y = 0.05``;
* ``inpaint``: the bottom half unknown, the top half measured with ``sigma_y = 0.05``.

Methods: ``pinv`` (the naive ``A^+ y``), ``dps`` (``--step-size``), ``pigdm``, ``smc`` (MCGdiff,
``--particles``) and ``sdedit`` (from ``A^+ y`` at ``--t0``), all on ``--solver`` (Euler-Maruyama; or DDIM
with ``--solver-args solver.eta=1 solver.time_grid=logsnr``) with ``--sampler-steps``.
Reported: PSNR and SSIM against the originals, the measurement consistency ``||y - A x|| / (sigma_y sqrt M)``
(RMS residual when noiseless) and the Frechet distance in the digits classifier's feature space against the
test split (``FD``), each mean +- std over the seed sets.

    python benchmarks/restoration.py --ckpt <run>/checkpoints/last.ckpt [--images 50]
        [--seed-sets 3] [--sampler-steps 100] [--particles 8] [--out benchmarks/results/restoration]

Writes ``<out>/restoration.json``, ``<out>/table.md``, each task's ``task=evaluate`` grid to
``<out>/<task>.png`` and ``<out>/restoration.png``: per task, rows of (original, the measurement shown as
``A^+ y`` (= the pinv restoration), dps, pigdm, smc, sdedit) for the first test digits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.restore import operator_for

METHODS = ["pinv", "dps", "pigdm", "smc", "sdedit"]
TASKS = {
    "superres": ["condition=superres", "condition.factor=2", "condition.sigma_y=0.0"],
    "deblur": [
        "condition=deblur",
        "condition.blur=gaussian",
        "condition.blur_sigma=1.0",
        "condition.sigma_y=0.05",
    ],
    "inpaint": ["condition=inpaint", "condition.mask=half", "condition.sigma_y=0.05"],
}


def evaluate(out: Path, name: str, args: argparse.Namespace) -> dict:
    run = out / name
    if run.exists():
        shutil.rmtree(run)  # this script's own output from an earlier run
    metrics = run_task(
        compose_config(
            "threads=1",
            "progress_bar_refresh_rate=0",
            "logger=none",
            "task=evaluate",
            f"ckpt_path={args.ckpt}",
            f"solver={args.solver}",
            *args.solver_args,
            f"solver.steps={args.sampler_steps}",
            f"task.seed_sets={args.seed_sets}",
            f"num_samples={args.images}",
            "condition.per_image=1",
            f"condition.particles={args.particles}",
            f"condition.step_size={args.step_size}",
            f"condition.t0={args.t0}",
            f"condition.weight={args.weight}",
            "condition.method=[" + ",".join(args.methods) + "]",
            f"condition.num_images={args.shown}",
            *TASKS[name],
            output_dir=run,
        )
    )
    shutil.copyfile(run / "condition.png", out / f"{name}.png")
    return metrics["condition"]


def figure(out: Path, shown: int) -> Path:
    """``<out>/restoration.png``: per task, ``shown`` rows of original, ``A^+ y``, then each other method."""
    from scoresde.train.images import save_samples_png

    rows = []
    for name in TASKS:
        saved = torch.load(out / name / "condition.pt", weights_only=False)
        cond = saved["condition"]
        op = operator_for(cond, cond["kind"], tuple(saved["originals"].shape[1:]), 0)
        originals, y = saved["originals"][:shown], saved["measurements"][:shown]
        cols = [originals, op.pinv(y)] + [saved["samples"][m][:shown] for m in METHODS if m != "pinv"]
        rows.append(torch.stack(cols, dim=1))
    grid = torch.cat(rows)
    return save_samples_png(
        grid.reshape(-1, *grid.shape[2:]),
        out / "restoration.png",
        levels=17,
        data_range=(-1.0, 1.0),
        nrow=grid.shape[1],
    )


def labelled_figure(out: Path, shown: int, tasks=TASKS) -> Path:
    """``<out>/restoration_labelled.png``: :func:`figure`'s grid with its rows (task, digit) and columns
    (original, the measurement as ``A^+ y``, then each method) labelled."""
    from scoresde.evaluation.plot import save_labelled_grid

    rows = [f"{name} {i + 1}" for name in tasks for i in range(shown)]
    cols = ["original", "A^+ y", *(m for m in METHODS if m != "pinv")]
    return save_labelled_grid(out / "restoration.png", out / "restoration_labelled.png", rows, cols,
                              title="restorations of test digits")


def _pm(spread: dict) -> str:
    return f"{spread['mean']:.3f} +- {spread.get('std') or 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--images", type=int, default=50, help="test digits per seed set")
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--sampler-steps", type=int, default=100, help="Euler-Maruyama steps")
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--step-size", type=float, default=1.0, help="DPS's zeta")
    ap.add_argument("--t0", type=float, default=0.4, help="SDEdit's start time")
    ap.add_argument("--weight", type=float, default=1.0, help="PiGDM's guidance weight")
    ap.add_argument("--shown", type=int, default=4)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--solver", default="em", choices=["em", "ddim"])
    ap.add_argument("--solver-args", nargs="*", default=[], help="e.g. solver.eta=1 solver.time_grid=logsnr")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/restoration"))
    ap.add_argument("--labels-only", action="store_true",
                    help="only redraw <out>/restoration_labelled.png from <out>/restoration.png")
    args = ap.parse_args()
    if args.labels_only:
        print(f"wrote {labelled_figure(args.out, args.shown)}")
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {name: evaluate(args.out, name, args) for name in args.tasks}
    seconds = time.perf_counter() - t0
    (args.out / "restoration.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "seconds": seconds},
            indent=2,
        )
    )
    if set(args.tasks) == set(TASKS) and args.methods == METHODS:
        print(f"wrote {figure(args.out, args.shown)} {labelled_figure(args.out, args.shown)}")
    lines = [
        f"{args.images} test digits, {args.seed_sets} seed sets, solver {args.solver}, "
        f"{args.sampler_steps} steps {' '.join(args.solver_args)}, "
        f"smc {args.particles} particles, dps step {args.step_size:g}, pigdm weight {args.weight:g}, "
        f"sdedit t0 {args.t0:g}; "
        f"{seconds / 60:.1f} min single-threaded; mean +- std over the seed sets",
        "",
        "| task | method | PSNR (dB) | SSIM | consistency | FD vs test |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        for method, r in entry["methods"].items():
            fd = _pm(r["quality"]["fid"]) if "quality" in r else "-"
            lines.append(
                f"| {name} | {method} | {_pm(r['psnr'])} | {_pm(r['ssim'])} | {_pm(r['consistency'])} "
                f"| {fd} |"
            )
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
