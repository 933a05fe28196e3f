"""Controllable generation on the 8x8 digits, end to end through the app (issue 15's demonstration).

1. ``task=train`` of a class-conditional U-Net (``model.num_classes=10``, label dropout 0.1): its null label
   is the unconditional score model that classifier guidance starts from, its labels drive classifier-free
   guidance.
2. ``task=train_classifier``: the noise-conditional classifier ``p_t(y | x_t)``.
3. For each guidance scale ``w``: rows 0-9 of class-guided and of classifier-free samples (PNG grids), the
   shipped digits classifier's accuracy on them (does a row show its digit?) and the Frechet distance, in
   that classifier's feature space, between each class's samples and that class's training images
   (averaged over the classes).
4. Inpainting of half-masked test digits (bottom half unknown) with the paper's replacement method and the
   particle filter (SMC): PNG grids and the RMSE of the completed pixels to the originals.

    python benchmarks/controllable.py [--steps 3000] [--clf-steps 1000] [--scales 0 1 3] [--out DIR]
                                      [--score-ckpt CKPT --classifier PT]   # reuse trained models

Writes ``<out>/controllable.json`` and the PNG grids, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scoresde.conditional import (
    cfg_score,
    class_conditional_score,
    classifier_guided_score,
    impute,
    network_classifier,
)
from scoresde.evaluation.classifier import digits_feature_extractor
from scoresde.evaluation.fid import fid_from_features
from scoresde.evaluation.stats import ReferenceStats
from scoresde.quantization import quantize
from scoresde.solvers import EulerMaruyama
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import datamodule_from_config
from scoresde.tasks.condition import make_mask
from scoresde.train import load_score_model
from scoresde.train.classifier import load_classifier
from scoresde.train.images import save_samples_png


def train(out: Path, steps: int, clf_steps: int) -> tuple[Path, Path]:
    common = ["threads=2", "progress_bar_refresh_rate=0", "logger=none"]
    run_task(compose_config(*common, f"trainer.max_steps={steps}", "trainer.max_time=null",
                            f"trainer.val_check_interval={steps}", "model.num_classes=10",
                            "task.sample=false", "task.likelihood=false", "validation.bpd_examples=0",
                            output_dir=out / "score"))
    run_task(compose_config(*common, "task=train_classifier", f"trainer.max_steps={clf_steps}",
                            "trainer.max_time=null", f"trainer.val_check_interval={clf_steps}",
                            output_dir=out / "classifier"))
    return out / "score" / "checkpoints" / "last.ckpt", out / "classifier" / "classifier.pt"


def frechet_per_class(extractor, samples_int, labels, train_int, train_labels) -> float:
    """Mean over classes of the Frechet distance between that class's samples and training images."""
    values = []
    for k in labels.unique().tolist():
        ref_f, _ = extractor.extract(train_int[train_labels == k])
        ref = ReferenceStats.from_features(ref_f, name=f"digits-train-{k}", feature_name="digits",
                                           fingerprint=extractor.fingerprint, data_hash="0" * 16)
        values.append(fid_from_features(ref, extractor.extract(samples_int[labels == k])[0]))
    return sum(values) / len(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--clf-steps", type=int, default=1000)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--sampler-steps", type=int, default=200)
    ap.add_argument("--inpaint-images", type=int, default=10)
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/controllable"))
    ap.add_argument("--score-ckpt", type=Path)
    ap.add_argument("--classifier", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.score_ckpt is None or args.classifier is None:
        args.score_ckpt, args.classifier = train(args.out, args.steps, args.clf_steps)
    train_seconds = time.perf_counter() - t0
    model = load_score_model(args.score_ckpt).eval()
    clf, _ = load_classifier(args.classifier)
    sde, levels, data_range = model.sde, model.hparams.levels, tuple(model.hparams.data_range)
    shape = tuple(model.data_shape)
    extractor = digits_feature_extractor()
    dm = datamodule_from_config(compose_config())
    train_int, train_labels = dm.integer_data("train"), dm.labels("train")
    solver = EulerMaruyama(steps=args.sampler_steps)
    y = torch.arange(10).repeat_interleave(args.per_class)
    seeds = list(range(len(y)))
    cond = class_conditional_score(model.net, sde, model.hparams.parameterization)

    def unconditional(x, t):  # the null label: the unconditional score model
        return cond(x, t, torch.full((x.shape[0],), model.net.null_label))

    rows = []
    for w in args.scales:
        for kind in ("classifier", "cfg"):
            if kind == "classifier":
                score = classifier_guided_score(unconditional, network_classifier(clf, sde), y, w)
            else:
                score = cfg_score(cond, y, w, model.net.null_label)
            x = solver.sample(score, sde, (len(y), *shape), seeds=seeds)
            ints = quantize(x, levels, data_range).to(torch.uint8)
            _, logits = extractor.extract(ints)
            acc = float((logits.argmax(1) == y).float().mean())
            fd = frechet_per_class(extractor, ints, y, train_int, train_labels)
            png = save_samples_png(x, args.out / f"{kind}_w{w:g}.png", levels=levels, data_range=data_range,
                                   nrow=args.per_class)
            rows.append({"guidance": kind, "w": w, "accuracy": acc, "fd_per_class": fd, "png": str(png)})
            print(f"{kind:10s} w={w:<4g} accuracy {acc:.3f}  FD/class {fd:.2f}", flush=True)
    originals = next(iter(dm.test_dataloader()))[: args.inpaint_images]
    originals = originals[0] if isinstance(originals, list | tuple) else originals
    known = originals.repeat_interleave(args.per_image, dim=0)
    mask = make_mask("half", shape)
    inpaint = []
    for method in ("paper", "smc"):
        x = impute(solver, unconditional, sde, known, mask, method=method, seeds=list(range(len(known))),
                   particles=16)
        rmse = float(((x - known)[~mask.expand_as(x)] ** 2).mean().sqrt())
        grid = torch.cat([torch.where(mask, originals, -1.0)[:, None],
                          x.reshape(len(originals), args.per_image, *shape), originals[:, None]], 1)
        png = save_samples_png(grid.reshape(-1, *shape), args.out / f"inpaint_{method}.png", levels=levels,
                               data_range=data_range, nrow=args.per_image + 2)
        inpaint.append({"method": method, "rmse_unknown": rmse, "png": str(png)})
        print(f"inpaint {method:5s} RMSE of the completed pixels {rmse:.3f}", flush=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_seconds,
              "guidance": rows, "inpainting": inpaint}
    (args.out / "controllable.json").write_text(json.dumps(result, indent=2))
    print("\n| guidance | w | accuracy (shipped classifier) | FD per class |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['guidance']} | {r['w']:g} | {r['accuracy']:.3f} | {r['fd_per_class']:.2f} |")
    print("\n| inpainting | RMSE of completed pixels |\n|---|---|")
    for r in inpaint:
        print(f"| {r['method']} | {r['rmse_unknown']:.3f} |")


if __name__ == "__main__":
    main()
