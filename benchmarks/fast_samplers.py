"""Few-step samplers (DDIM, DPM-Solver, EDM's Heun, UniPC) against the paper's samplers: accuracy, quality,
time.

    python benchmarks/fast_samplers.py [--ckpt PATH | --train-time 00:00:05:00 | --train-steps N]
        [--nfe 5 10 15 20 50] [--quality-nfe ...] [--num-samples 1000] [--seed-sets 3]
        [--accuracy-samples 100] [--parts oracle accuracy quality]
        [--baseline-steps 1000] [--baseline-samples 1000] [--baseline-seed-sets 3] [--threads 1]
        [--oracle-dim 64] [--out benchmarks/results/fast_samplers]

1. Oracle (no training, the error is exact): a 64-dimensional Gaussian mixture under VP, sub-VP and VE; for
   each deterministic sampler and budget, the RMS distance of its output at ``eps`` (no final denoising) to
   the probability-flow ODE solved to rtol 1e-9 (float64, exact score) from the same ``x_T``.
2. Digits (the main job's model: ``--ckpt``, or trained here with the main job's preset for ``--train-time``
   or ``--train-steps``): (a) accuracy: RMS distance of each deterministic sampler's output at ``eps`` to the
   ODE solved to rtol 1e-7 from the same ``x_T``, all in float64 (no sampling noise in this number);
   (b) quality: FID and KID in the digits classifier's features against the 1,500 training images,
   ``--num-samples`` per seed set, mean and spread (std) over ``--seed-sets`` disjoint seed sets; (c) wall
   time per seed set. The paper's samplers (EM and PC with ``--baseline-steps`` steps, the ODE with RK45
   at rtol 1e-5) are the baselines.

Two rows are references written here from the published formulas, not library samplers: the official
DPM-Solver++(3M) code's order schedule (lower order in the last steps below 10 steps; its third-order term is
the library's) and the third-order term of Taylor's expansion (``D_2 = 2 (D1_0 - D1_1) / (r0 + r1)``, exact
for a quadratic, this library's update before the measurement; see ``DPMSolver.multistep``).

Writes ``results.json``, ``table.md`` and ``fast_samplers.png`` (quality and accuracy against evaluations,
log x axis, one line per sampler, the spread as error bars; matplotlib: ``pip install scoresde[plot]``).
Every sampler stops at ``eps`` without a final denoising step; Heun's budgets are ``2 N - 2`` evaluations
(``N = nfe // 2 + 1`` levels, ``denoise_to_zero=False``), i.e. one fewer at odd budgets.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.solvers import (
    DDIM,
    DPMSolver,
    EulerMaruyama,
    Heun,
    PredictorCorrector,
    ProbabilityFlowODE,
    UniPC,
)
from scoresde.solvers import dpm_solver as dpm


class OfficialScheduleDPMSolver3M(DPMSolver):
    """DPM-Solver++(3M) with the official code's order schedule: lower order in the last steps below 10."""

    lower_order_final_below = {**dpm.LOWER_ORDER_FINAL_BELOW, 3: 10}

    def __init__(self, steps: int):
        super().__init__(steps, order=3)


class TaylorDPMSolver3M(DPMSolver):
    """DPM-Solver++(3M) with Taylor's third-order term ``phi_3(h) h^2 M''``, i.e.
    ``D_2 = 2 (D1_0 - D1_1) / (r0 + r1)`` (global order 3); otherwise the library's update and schedule."""

    def __init__(self, steps: int):
        super().__init__(steps, order=3)

    @staticmethod
    def multistep(x, history, nt, order):
        if order < 3:
            return DPMSolver.multistep(x, history, nt, order)
        (n0, m0), (n1, m1), (n2, m2) = history[-1], history[-2], history[-3]
        h = nt.l - n0.l
        r0, r1 = (n0.l - n1.l) / h, (n1.l - n2.l) / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d_1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
        d_2 = (d1_0 - d1_1) * (2.0 / (r0 + r1))
        return x * (nt.a / n0.a) - (m0 * dpm.phi_1(h) + d_1 * dpm.phi_2(h) + d_2 * dpm.phi_3(h)) * nt.b


#: name -> sampler for a budget of ``nfe`` score evaluations (deterministic: used in the accuracy tables too)
FAST: dict[str, Callable[[int], object]] = {
    "DDIM": lambda n: DDIM(n, denoise=False),
    "DPM-Solver++(2M)": lambda n: DPMSolver(n, order=2),
    "DPM-Solver++(3M)": lambda n: DPMSolver(n, order=3),
    "DPM-Solver++(3M), official schedule": OfficialScheduleDPMSolver3M,
    "DPM-Solver++(3M), Taylor D_2": TaylorDPMSolver3M,
    "DPM-Solver-3": lambda n: DPMSolver(n, order=3, method="singlestep", prediction="noise"),
    "Heun (EDM)": lambda n: Heun(n // 2 + 1, denoise_to_zero=False),
    "UniPC-2": lambda n: UniPC(n, order=2),
    "UniPC-3": lambda n: UniPC(n, order=3),
}


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=None, help="the digits model; default: train one here")
    p.add_argument("--train-time", default="00:00:05:00", help="DD:HH:MM:SS budget of the training here")
    p.add_argument("--train-steps", type=int, default=8000)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 15, 20, 50])
    p.add_argument("--samplers", nargs="+", default=list(FAST), choices=list(FAST))
    p.add_argument("--quality-samplers", nargs="*", default=list(FAST), choices=list(FAST))
    p.add_argument("--quality-nfe", type=int, nargs="+", default=None, help="default: --nfe")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed-sets", type=int, default=3)
    p.add_argument("--accuracy-samples", type=int, default=100)
    p.add_argument("--baselines", nargs="*", default=["em", "pc", "ode"], choices=["em", "pc", "ode"])
    p.add_argument("--baseline-steps", type=int, default=1000)
    p.add_argument("--baseline-samples", type=int, default=None, help="default: --num-samples")
    p.add_argument("--baseline-seed-sets", type=int, default=None, help="default: --seed-sets")
    p.add_argument("--oracle-dim", type=int, default=64)
    p.add_argument("--oracle-samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fast_samplers"))
    p.add_argument("--parts", nargs="+", default=["oracle", "accuracy", "quality"],
                   choices=["oracle", "accuracy", "quality"],
                   help="what to run (e.g. the baselines' quality in a second process on another core)")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="with --report-only: also take the rows of these other runs' results.json")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite table.md and the plot from --out's results.json")
    args = p.parse_args(argv)
    if min(args.nfe + (args.quality_nfe or [])) < 3:
        p.error("--nfe values must be >= 3 (DPM-Solver-3 needs 3 evaluations)")
    if args.seed_sets < 1 or args.num_samples < 2:
        p.error("--seed-sets must be >= 1 and --num-samples >= 2")
    return args


def _rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean square distance per coordinate."""
    return float((x.double() - ref.double()).pow(2).mean().sqrt())


# --- 1. the oracle ----------------------------------------------------------------------------------------
def oracle_accuracy(args: argparse.Namespace) -> list[dict]:
    gm = GaussianMixture.random(args.oracle_dim, 5, std_range=(0.1, 0.6), spread=0.5, seed=0)
    rows = []
    for sde in (VPSDE(), SubVPSDE(), VESDE()):
        score = gm.score_fn(sde)
        shape = (args.oracle_samples, args.oracle_dim)
        x_T = sde.prior_sample(shape, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
        exact = ProbabilityFlowODE(method="DOP853", rtol=1e-9, atol=1e-9, denoise=False)
        ref = exact.sample(score, sde, shape, x_T=x_T)
        for name in args.samplers:
            for n in args.nfe:
                solver = FAST[name](n)
                x = solver.sample(score, sde, shape, x_T=x_T)
                rows.append({"sde": type(sde).__name__, "sampler": name, "budget": n, "nfe": solver.nfe,
                             "rms": _rms(x, ref)})
        for tol in (1e-3, 1e-5):  # the scipy ODE at the paper's tolerance, for scale
            solver = ProbabilityFlowODE(rtol=tol, atol=tol, denoise=False)
            x = solver.sample(score, sde, shape, x_T=x_T)
            rows.append({"sde": type(sde).__name__, "sampler": f"ODE RK45 {tol:g}", "budget": None,
                         "nfe": solver.nfe, "rms": _rms(x, ref)})
        print(f"oracle {type(sde).__name__}: done", flush=True)
    return rows


# --- 2. the digits model ---------------------------------------------------------------------------------
def digits_model(args: argparse.Namespace):
    from scoresde.tasks import compose_config, run_task
    from scoresde.train import load_score_model

    ckpt = args.ckpt
    if ckpt is None:
        run = args.out / "train"
        ckpt = run / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            print(f"training the main job's model for {args.train_time} / {args.train_steps} steps -> {run}")
            run_task(compose_config(
                f"trainer.max_time={args.train_time}", f"trainer.max_steps={args.train_steps}",
                f"threads={args.threads}", "task.sample=false", "task.likelihood=false",
                "validation.bpd_examples=0", "progress_bar_refresh_rate=0", "logger=none", output_dir=run,
            ))
    model = load_score_model(ckpt)
    return model, ckpt


def digits_accuracy(args: argparse.Namespace, model) -> list[dict]:
    from scoresde.solvers import NoiseSource

    shape = (args.accuracy_samples, *model.data_shape)
    seeds = [10**9 + i for i in range(args.accuracy_samples)]  # disjoint from the quality seed sets
    # float64 network, reference and samplers: the error is the discretisation's alone (in float32 the
    # reference at rtol 1e-7 is below the network's rounding, and every sampler met a floor of ~4e-3)
    model = copy.deepcopy(model).double()
    x_T = model.sde.prior_std * NoiseSource(shape[1:], shape[0], seeds=seeds, dtype=torch.float64)()
    with torch.no_grad():
        ode = ProbabilityFlowODE(rtol=1e-7, atol=1e-7, denoise=False)
        ref = ode.sample(model.score_fn, model.sde, shape, x_T=x_T)
    print(f"digits accuracy: reference ODE at rtol 1e-7 took {ode.nfe} evaluations", flush=True)
    rows = []
    candidates = [(name, n, FAST[name](n)) for name in args.samplers for n in args.nfe]
    candidates += [(f"ODE RK45 {tol:g}", None, ProbabilityFlowODE(rtol=tol, atol=tol, denoise=False))
                   for tol in (1e-3, 1e-5)]
    for name, budget, solver in candidates:
        with torch.no_grad():
            x = solver.sample(model.score_fn, model.sde, shape, x_T=x_T)
        rows.append({"sampler": name, "budget": budget, "nfe": solver.nfe, "rms": _rms(x, ref)})
    return rows


def _std(spread: dict) -> float:
    """The spread over seed sets; NaN for one set (not measured)."""
    std = spread.get("std")
    return math.nan if std is None else float(std)


def digits_quality(args: argparse.Namespace, model, save: Callable[[list[dict]], None]) -> list[dict]:
    from scoresde.tasks import compose_config
    from scoresde.tasks.common import datamodule_from_config
    from scoresde.tasks.evaluate import evaluation_seed_sets, image_quality
    from scoresde.tasks.sample import generate

    dm = datamodule_from_config(compose_config())
    ecfg = {"feature_network": "digits", "reference_split": "train", "data_floor": True,
            "kid_subsets": 50, "kid_subset_size": min(1000, args.num_samples)}
    base_n = args.baseline_samples or args.num_samples
    base_sets = args.baseline_seed_sets or args.seed_sets
    runs = [(name, n, lambda name=name, n=n: FAST[name](n), args.num_samples, args.seed_sets)
            for name in args.quality_samplers for n in (args.quality_nfe or args.nfe)]
    steps = args.baseline_steps
    baselines = {"em": (f"EM {steps}", lambda: EulerMaruyama(steps=steps)),
                 "pc": (f"PC {steps}", lambda: PredictorCorrector(steps=steps)),
                 "ode": ("ODE RK45 1e-05", lambda: ProbabilityFlowODE(rtol=1e-5, atol=1e-5))}
    runs += [(baselines[b][0], None, baselines[b][1], base_n, base_sets) for b in args.baselines]
    rows = []
    for name, budget, make, num, sets in runs:
        seed_sets = evaluation_seed_sets(sets, num, args.seed)
        solver, samples, seconds, nfe = make(), [], [], []
        for seeds in seed_sets:
            t0 = time.perf_counter()
            x, stats = generate(model, solver, seeds, args.batch_size)
            seconds.append(time.perf_counter() - t0)
            samples.append(x)
            nfe.append(stats["nfe_per_batch"])
        q = image_quality(samples, dm, ecfg, levels=17, data_range=(-1.0, 1.0), seed=args.seed)
        row = {"sampler": name, "budget": budget, "nfe": statistics.mean(nfe), "num_samples": num,
               "seed_sets": sets, "fid": q["fid"]["mean"], "fid_std": _std(q["fid"]),
               "kid": q["kid"]["mean"], "kid_std": _std(q["kid"]),
               "seconds_per_set": statistics.mean(seconds), "fid_data_floor": q["data_floor"]["fid"]}
        rows.append(row)
        save(rows)  # kept if a later row fails
        print(f"{name:18s} nfe {row['nfe']:6.0f}  FID {row['fid']:7.2f} +- {row['fid_std']:.2f}  "
              f"KID {row['kid']:.4f} +- {row['kid_std']:.4f}  {row['seconds_per_set']:.1f} s/set", flush=True)
    return rows


# --- report --------------------------------------------------------------------------------------------
def _pivot(rows: list[dict], fmt: Callable[[dict], str]) -> str:
    """Markdown table: one row per sampler, one column per requested budget (the evaluations actually made
    in brackets where they differ, e.g. Heun's 2N - 2); rows without a budget (the ODE) listed below."""
    budgets = sorted({r["budget"] for r in rows if r["budget"]})
    lines = ["| sampler | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for name in dict.fromkeys(r["sampler"] for r in rows if r["budget"]):
        by = {r["budget"]: r for r in rows if r["sampler"] == name}
        cells = [fmt(by[b]) + ("" if by[b]["nfe"] == b else f" ({by[b]['nfe']:.0f})") if b in by else "-"
                 for b in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    others = [f"{r['sampler']}: {fmt(r)} at {r['nfe']:.0f} evaluations" for r in rows if not r["budget"]]
    return "\n".join(lines) + ("\n\n" + "; ".join(others) + "\n" if others else "")


def report(results: dict, out: Path) -> str:
    parts = [f"# Few-step samplers\n\n{results['header']}\n"]
    if results.get("oracle"):
        parts.append("## Oracle: RMS distance to the exact probability flow (64-d Gaussian mixture), "
                     "value (evaluations)\n")
        for sde in dict.fromkeys(r["sde"] for r in results["oracle"]):
            rows = [r for r in results["oracle"] if r["sde"] == sde]
            parts.append(f"### {sde}\n\n" + _pivot(rows, lambda r: f"{r['rms']:.2e}") + "\n")
    if results.get("accuracy"):
        parts.append("## Digits: RMS distance to the ODE at rtol 1e-7 from the same x_T, at eps, float64\n\n"
                     + _pivot(results["accuracy"], lambda r: f"{r['rms']:.2e}") + "\n")
    if results.get("quality"):
        q = results["quality"]
        parts.append(
            f"## Digits: quality (FID, KID in the digits classifier's features; mean +- std over seed "
            f"sets) and wall time\n\nreal test images score FID {q[0]['fid_data_floor']:.2f}\n\n"
            "| sampler | NFE | samples x sets | FID | KID | s per set |\n|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {r['sampler']} | {r['nfe']:.0f} | {r['num_samples']} x {r['seed_sets']} | "
                f"{r['fid']:.2f} +- {r['fid_std']:.2f} | {r['kid']:.2f} +- {r['kid_std']:.2f} | "
                f"{r['seconds_per_set']:.1f} |"
                for r in q
            ) + "\n")
    text = "\n".join(parts)
    (out / "table.md").write_text(text)
    return text


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install scoresde[plot]): no plot")
        return None
    panels = [("quality", "FID (digits features)"), ("accuracy", "RMS to ODE rtol 1e-7 (digits)"),
              ("oracle", "RMS to exact ODE (oracle, VP)")]
    panels = [(k, label) for k, label in panels if results.get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    names = list(dict.fromkeys(r["sampler"] for key, _ in panels for r in results[key]))
    color = {name: f"C{i % 10}" for i, name in enumerate(names)}  # one color per sampler in every panel
    for ax, (key, label) in zip(axes[0], panels):
        rows = results[key] if key != "oracle" else [r for r in results[key] if r["sde"] == "VPSDE"]
        for name in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["nfe"], r["fid"] if key == "quality" else r["rms"], r.get("fid_std", 0.0))
                         for r in rows if r["sampler"] == name)
            xs, ys, es = zip(*pts)
            if len(pts) == 1:  # a baseline: one budget
                ax.errorbar(xs, ys, yerr=es if key == "quality" else None, fmt="s", capsize=3, label=name,
                            color=color[name])
            else:
                ax.errorbar(xs, ys, yerr=es if key == "quality" else None, fmt="o-", capsize=3, label=name,
                            color=color[name])
        ax.set_xscale("log")
        ax.set_yscale("log")  # FID spans 5-400 between 5 and 20 evaluations
        ax.set_xlabel("score evaluations per sample (log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        for other in args.merge:
            more = json.loads(other.read_text())
            for key in ("oracle", "accuracy", "quality"):
                results[key] = results.get(key, []) + more.get(key, [])
            if more.get("header"):
                results["header"] += f" Merged from {other.parent.name} (run beside it): {more['header']}"
        if args.merge:
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(report(results, args.out))
        plot(results, args.out / "fast_samplers.png")
        return
    t0 = time.perf_counter()
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    save = lambda: (args.out / "results.json").write_text(json.dumps(results, indent=2))  # noqa: E731
    if "oracle" in args.parts:
        results["oracle"] = oracle_accuracy(args)
        save()
    model_line = "Oracle only. "
    if {"accuracy", "quality"} & set(args.parts):
        model, ckpt = digits_model(args)
        print(f"digits model: {ckpt} (step {model.global_step_loaded})", flush=True)
        model_line = (f"Digits model: the main job's preset, {model.global_step_loaded} training steps "
                      f"({'given checkpoint' if args.ckpt else f'trained here, budget {args.train_time}'}); ")
    if "accuracy" in args.parts:
        results["accuracy"] = digits_accuracy(args, model)
        save()
    if "quality" in args.parts:
        results["quality"] = digits_quality(args, model, lambda rows: (results.update(quality=rows), save()))
    results["header"] = (
        f"{model_line}{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}, benchmark wall time "
        f"{time.perf_counter() - t0:.0f} s. Budgets: {', '.join(map(str, args.nfe))} evaluations "
        "(Heun: 2N - 2). Timings are noisy on a shared machine: compare ratios within one run."
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results, args.out))
    png = plot(results, args.out / "fast_samplers.png")
    if png:
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
