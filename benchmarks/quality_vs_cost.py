"""Sample quality versus cost on the digits: one model per SDE, every solver at several budgets.

    python benchmarks/quality_vs_cost.py [--sdes vp subvp ve] [--train-steps 8000] [--ckpt vp=PATH ...]
        [--num-samples 1000] [--em-steps 100 250 500 1000] [--pc-steps 100 250 500 1000]
        [--ode-rtol 1e-3 1e-5] [--threads 2] [--out benchmarks/results/quality_vs_cost]
    python benchmarks/quality_vs_cost.py --merge DIR [DIR ...] --out DIR    # one table from runs per SDE

For each SDE it trains the main job's model (`python -m scoresde.run sde=<sde>` with `trainer.max_steps`
and no time cap) or loads the checkpoint given with `--ckpt`, then for each solver and budget draws the same
per-sample seeds and reports: score evaluations per sample (NFE), wall time, FID and KID in the digits
classifier's feature space against the 1,500 training images, the classifier's mean max-probability, and
memorisation; plus the model's test bits/dim (17 levels, probability-flow ODE at rtol 1e-3, one value per
SDE: it does not depend on the sampler). Prints a markdown table, writes it with the raw numbers as JSON, and
saves `quality_vs_nfe.png` (matplotlib, the `plot` extra: FID versus NFE, one curve per SDE and solver, the
standard deviation over `--seed-sets` disjoint seed sets as error bars).

FID from a few hundred samples is biased upwards and moves by about one unit between seed sets (see
`task=evaluate`, which reports the spread): compare rows at the same `--num-samples`, and treat differences
of that size as ties.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from scoresde.evaluation.plot import save_line_plot
from scoresde.solvers import EulerMaruyama, PredictorCorrector, ProbabilityFlowODE
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import datamodule_from_config
from scoresde.tasks.evaluate import evaluation_seed_sets, image_quality
from scoresde.tasks.likelihood import evaluate_likelihood
from scoresde.tasks.sample import generate
from scoresde.train import load_score_model


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve"], choices=["vp", "subvp", "ve"])
    p.add_argument("--train-steps", type=int, default=8000)
    p.add_argument("--ckpt", nargs="*", default=[], help="sde=path: use this checkpoint instead of training")
    p.add_argument("--num-samples", type=int, default=1000, help="per seed set")
    p.add_argument("--seed-sets", type=int, default=3, help="disjoint seed sets (their spread: error bars)")
    p.add_argument("--em-steps", type=int, nargs="*", default=[100, 250, 500, 1000])
    p.add_argument("--pc-steps", type=int, nargs="*", default=[100, 250, 500, 1000])
    p.add_argument("--ode-rtol", type=float, nargs="*", default=[1e-3, 1e-5])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_vs_cost"))
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="only merge the results.json of these --out directories into --out",
    )
    return p.parse_args()


def _model(sde: str, args: argparse.Namespace, ckpts: dict[str, str]):
    if sde in ckpts:
        return Path(ckpts[sde])
    run = args.out / f"train_{sde}"
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file() and torch.load(last, weights_only=False)["global_step"] >= args.train_steps:
        return last  # already trained by an earlier invocation
    print(f"training {sde} for {args.train_steps} steps -> {run}", flush=True)
    cfg = compose_config(
        f"sde={sde}",
        f"trainer.max_steps={args.train_steps}",
        "trainer.max_time=null",
        f"threads={args.threads}",
        "task.sample=false",
        "task.likelihood=false",
        "progress_bar_refresh_rate=200",
        *(["ckpt_path=last"] if last.is_file() else []),
        output_dir=run,
    )
    run_task(cfg)
    return last


def _solvers(args: argparse.Namespace) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    out += [("em", f"{n} steps", EulerMaruyama(steps=n)) for n in args.em_steps]
    out += [("pc", f"{n} steps", PredictorCorrector(steps=n)) for n in args.pc_steps]
    out += [("ode", f"rtol {r:g}", ProbabilityFlowODE(rtol=r, atol=r)) for r in args.ode_rtol]
    return out


def main() -> None:
    args = _parse()
    if args.merge:
        merge(args.merge, args.out)
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpts = dict(item.split("=", 1) for item in args.ckpt)
    dm = datamodule_from_config(compose_config())
    seed_sets = evaluation_seed_sets(args.seed_sets, args.num_samples, args.seed)
    seeds = [s for group in seed_sets for s in group]
    ecfg = {"feature_network": "digits", "reference_split": "train", "data_floor": True, "kid_subsets": 50}
    rows: list[dict] = []
    bpd: dict[str, float] = {}
    for sde in args.sdes:
        model = load_score_model(_model(sde, args, ckpts))
        lik, _ = evaluate_likelihood(
            model,
            dm,
            {"split": "test", "batch_size": 500, "estimator": "rademacher", "rtol": 1e-3, "atol": 1e-3},
            seed=args.seed,
        )
        bpd[sde] = lik["bpd"]
        print(f"{sde}: step {model.global_step_loaded}, test bits/dim {lik['bpd']:.4f}", flush=True)
        for solver_name, budget, solver in _solvers(args):
            t0 = time.perf_counter()
            x, stats = generate(model, solver, seeds, args.batch_size)
            wall = time.perf_counter() - t0
            sets = list(torch.split(x, args.num_samples))
            q = image_quality(sets, dm, ecfg, levels=17, data_range=(-1.0, 1.0), seed=args.seed)
            row = {
                "sde": sde,
                "solver": solver_name,
                "budget": budget,
                "nfe": stats["nfe_per_batch"],
                "seconds": wall,
                "fid": q["fid"]["mean"],
                "fid_std": q["fid"]["std"],  # over the seed sets (None for one set)
                "kid": q["kid"]["mean"],
                "kid_std": q["kid"]["std"],
                "confidence": q["confidence"]["mean_max_prob"],
                "memorization": q["memorization"]["fraction"],
                "bpd": lik["bpd"],
                "fid_data_floor": q["data_floor"]["fid"],
            }
            rows.append(row)
            print(_fmt(row), flush=True)
    header = (
        f"{args.seed_sets} seed sets of {args.num_samples} samples per row (mean +- std over the sets), "
        f"seed {args.seed}, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.2f}; FID/KID in the digits classifier's feature space against "
        f"the 1,500 training images (real test images score FID {rows[0]['fid_data_floor']:.2f}); "
        "bits/dim: test split, 17 levels"
    )
    (args.out / "results.json").write_text(
        json.dumps({"args": vars(args), "header": header, "rows": rows, "bpd": bpd}, indent=2, default=str)
    )
    report(rows, header, args.out)


def report(rows: list[dict], header: str, out: Path) -> None:
    """Print the markdown table, write it to ``table.md`` and the FID-versus-NFE plot to
    ``quality_vs_nfe.png``."""
    table = _table(rows)
    print("\n" + header + "\n\n" + table)
    (out / "table.md").write_text(header + "\n\n" + table + "\n")
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for r in rows:
        series.setdefault(f"{r['sde']} SDE, {r['solver']} solver", []).append(
            (r["nfe"], r["fid"], r.get("fid_std"))
        )
    png = save_line_plot(
        series,
        out / "quality_vs_nfe.png",
        xlabel="score evaluations per sample (NFE, log scale)",
        ylabel="FID in the digits classifier's features",
        title="digits: FID versus cost"
        + (" (error bars: std over seed sets)" if any(r.get("fid_std") for r in rows) else " (one seed set)"),
        logx=True,
    )
    print(f"wrote {png}")


def merge(dirs: list[Path], out: Path) -> None:
    """One table and plot from the ``results.json`` of several runs (e.g. one per SDE, run in parallel)."""
    rows, headers = [], []
    for d in dirs:
        data = json.loads((d / "results.json").read_text())
        rows += data["rows"]
        headers.append(f"{', '.join(sorted({r['sde'] for r in data['rows']}))}: {data.get('header', '')}")
    out.mkdir(parents=True, exist_ok=True)
    report(rows, "\n".join(headers), out)


def _fmt(r: dict) -> str:
    cells = [
        r["sde"],
        r["solver"],
        r["budget"],
        f"{r['nfe']:.0f}",
        f"{r['seconds']:.1f}",
        _pm(r["fid"], r.get("fid_std"), 2),
        _pm(r["kid"], r.get("kid_std"), 4),
        f"{r['confidence']:.3f}",
        f"{r['memorization']:.3f}",
        f"{r['bpd']:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _pm(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} +- {std:.{digits}f}"


def _table(rows: list[dict]) -> str:
    head = (
        "| SDE | solver | budget | NFE | wall s | FID | KID | confidence | memorised | test bpd |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(_fmt(r) for r in rows)])


if __name__ == "__main__":
    main()
