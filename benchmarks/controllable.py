"""Controllable generation on the 8x8 digits, end to end through the app (issue 15's demonstration).

1. ``task=train`` of a class-conditional U-Net (``model.num_classes=10``, label dropout 0.1): its null label
   is the unconditional score model that classifier guidance starts from, its labels drive classifier-free
   guidance.
2. ``task=train_classifier``: the noise-conditional classifier ``p_t(y | x_t)``.
3. ``task=evaluate condition=class`` and ``condition=cfg`` for the guidance scales ``--scales``: rows 0-9 of
   class-guided and of classifier-free samples (``condition.png``), the shipped digits classifier's accuracy
   on them (does a row show its digit?) and the Frechet distance, in that classifier's feature space, between
   each class's samples and that class's training images (mean over the classes), each over ``--seed-sets``
   seed sets (mean +- std).
4. ``task=evaluate condition=inpaint`` of half-masked test digits (bottom half unknown) with the paper's
   replacement method and the particle filter (SMC): ``condition.png`` and the RMS distance of the completed
   pixels to the originals.

    python benchmarks/controllable.py [--steps 3000] [--clf-steps 1000] [--scales 0 1 3] [--out DIR]
                                      [--score-ckpt CKPT --classifier PT]   # reuse trained models
    python benchmarks/controllable.py --labels-only [--out DIR]   # only redraw the labelled figures

Writes ``<out>/controllable.json``, copies the grids to ``<out>/{class,cfg,inpaint}.png``, draws
``<out>/guidance.png`` (rows 0-9, a few samples per guidance scale of both kinds side by side), the same
two grids with row and column labels (matplotlib: ``guidance_labelled.png``, ``inpaint_labelled.png``) and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from scoresde.evaluation.plot import save_labelled_grid
from scoresde.tasks import compose_config, run_task

COMMON = ["threads=2", "progress_bar_refresh_rate=0", "logger=none"]


def train(out: Path, steps: int, clf_steps: int) -> tuple[Path, Path]:
    run_task(compose_config(*COMMON, f"trainer.max_steps={steps}", "trainer.max_time=null",
                            f"trainer.val_check_interval={steps}", "model.num_classes=10",
                            "task.sample=false", "task.likelihood=false", "validation.bpd_examples=0",
                            output_dir=out / "score"))
    run_task(compose_config(*COMMON, "task=train_classifier", f"trainer.max_steps={clf_steps}",
                            "trainer.max_time=null", f"trainer.val_check_interval={clf_steps}",
                            output_dir=out / "classifier"))
    return out / "score" / "checkpoints" / "last.ckpt", out / "classifier" / "classifier.pt"


def evaluate(out: Path, name: str, args: argparse.Namespace, *overrides: str) -> dict:
    """``task=evaluate`` of the score model with a condition; returns the ``condition`` entry of its metrics
    and copies its grid to ``<out>/<name>.png``."""
    run = out / name
    if run.exists():
        shutil.rmtree(run)  # this script's own output from an earlier run
    metrics = run_task(compose_config(
        *COMMON, "task=evaluate", f"ckpt_path={args.score_ckpt}", "solver=em",
        f"solver.steps={args.sampler_steps}", f"task.seed_sets={args.seed_sets}", *overrides,
        output_dir=run))
    shutil.copyfile(run / "condition.png", out / f"{name}.png")
    return metrics["condition"]


def guidance_figure(out: Path, per_scale: int = 4) -> Path:
    """``<out>/guidance.png``: one row per class 0-9; ``per_scale`` columns for each guidance scale of the
    classifier-guided run, then for each scale of the classifier-free run (the first seed set's samples)."""
    from scoresde.train.images import save_samples_png

    blocks = []
    for name in ("class", "cfg"):
        saved = torch.load(out / name / "condition.pt", weights_only=False)
        labels = saved["labels"]
        for x in saved["samples"].values():
            # (10, per_scale, C, H, W): the first per_scale samples of each class
            blocks.append(torch.stack([x[labels == k][:per_scale] for k in range(10)]))
    grid = torch.cat(blocks, dim=1)
    return save_samples_png(grid.reshape(-1, *grid.shape[2:]), out / "guidance.png", levels=17,
                            data_range=(-1.0, 1.0), nrow=grid.shape[1])


def label_figures(out: Path, args: argparse.Namespace, per_scale: int = 4) -> list[Path]:
    """``guidance_labelled.png`` and ``inpaint_labelled.png`` from ``guidance.png`` and ``inpaint.png``."""
    scales = [float(w) for w in args.scales]
    groups = [(f"{kind} w={w:g}", per_scale) for kind in ("classifier", "classifier-free") for w in scales]
    cols = [f"#{j + 1}" for _ in groups for j in range(per_scale)]
    guidance = save_labelled_grid(
        out / "guidance.png", out / "guidance_labelled.png", [f"class {k}" for k in range(10)], cols,
        title="class-conditional samples per guidance scale (rows: the class asked for)", col_groups=groups)
    methods, shown = ["paper", "smc"], 10
    completions = [f"completion {j + 1}" for j in range(int(args.per_image))]
    inpaint = save_labelled_grid(
        out / "inpaint.png", out / "inpaint_labelled.png",
        [f"{m} {i + 1}" for m in methods for i in range(shown)], ["input", *completions, "original"],
        title="inpainting of the bottom half")
    return [guidance, inpaint]


def _pm(spread: dict) -> str:
    return f"{spread['mean']:.3f} +- {spread.get('std') or 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--clf-steps", type=int, default=1000)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    ap.add_argument("--per-class", type=int, default=50, help="samples per class and seed set")
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--sampler-steps", type=int, default=200, help="Euler-Maruyama steps")
    ap.add_argument("--inpaint-images", type=int, default=50)
    ap.add_argument("--per-image", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/controllable"))
    ap.add_argument("--score-ckpt", type=Path)
    ap.add_argument("--classifier", type=Path)
    ap.add_argument("--labels-only", action="store_true",
                    help="only redraw the labelled figures from <out>/guidance.png and <out>/inpaint.png")
    args = ap.parse_args()
    if args.labels_only:
        print("wrote", *label_figures(args.out, args))
        return
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.score_ckpt is None or args.classifier is None:
        args.score_ckpt, args.classifier = train(args.out, args.steps, args.clf_steps)
    train_seconds = time.perf_counter() - t0
    scales = "[" + ",".join(f"{w:g}" for w in args.scales) + "]"
    guided = {
        "class": evaluate(args.out, "class", args, "condition=class",
                          f"condition.classifier={args.classifier}", f"condition.scale={scales}",
                          f"num_samples={10 * args.per_class}", "condition.per_class=10"),
        "cfg": evaluate(args.out, "cfg", args, "condition=cfg", f"condition.scale={scales}",
                        f"num_samples={10 * args.per_class}", "condition.per_class=10"),
    }
    inpaint = evaluate(args.out, "inpaint", args, "condition=inpaint", "condition.mask=half",
                       "condition.method=[paper,smc]", f"condition.per_image={args.per_image}",
                       f"num_samples={args.inpaint_images * args.per_image}", "condition.num_images=10")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_seconds,
              "guidance": guided, "inpainting": inpaint, "seconds": time.perf_counter() - t0}
    (args.out / "controllable.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {guidance_figure(args.out)}", *label_figures(args.out, args))
    print(f"\n{args.seed_sets} seed sets of {args.per_class} samples per class (Euler-Maruyama, "
          f"{args.sampler_steps} steps); mean +- std over the sets\n")
    print("| guidance | w | accuracy (shipped classifier) | FD per class | KID per class |\n"
          "|---|---|---|---|---|")
    for kind, entry in guided.items():
        for r in entry["results"]:
            print(f"| {'classifier' if kind == 'class' else 'classifier-free'} | {r['scale']:g} | "
                  f"{_pm(r['accuracy'])} | {_pm(r['fid'])} | {_pm(r['kid'])} |")
    print(f"\n{inpaint['num_images']} half-masked test digits x {inpaint['per_image']} completions, "
          f"{args.seed_sets} seed sets\n")
    print("| inpainting | RMS of completed pixels | known pixels' max deviation | FD vs test images |"
          "\n|---|---|---|---|")
    for method, r in inpaint["methods"].items():
        print(f"| {method} | {_pm(r['rms_unknown'])} | {r['known_max_deviation']:.1e} | "
              f"{_pm(r['quality']['fid']) if 'quality' in r else '-'} |")


if __name__ == "__main__":
    main()
