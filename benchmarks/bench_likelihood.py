"""Cost of the likelihood ODE beyond the model.

    overhead ratio = wall / (NFE x cost of one score evaluation with its vector-Jacobian product)

for the small U-Net on 1x8x8 images (batch 64) and for the Gaussian-mixture oracle, per estimator
and tolerance (target <= 1.2). Then the thread-pool trap: a 49k-dimensional solve (16x3x32x32)
with torch on 2 threads, scipy's BLAS left alone vs. capped to one thread (threadpoolctl).

For the oracle a second ratio comes from a hand-written solve: ``solve_ivp`` on a bare right-hand side
(numpy slicing and casts, the score, one VJP, nothing else: no counting, checks, progress or
wrappers). It is the floor of any scipy + torch likelihood on this machine.

The machine is shared and noisy (the score+VJP cost alone moves by +-15% between minutes): each
row alternates ``--repeats`` solves with measurements of the score+VJP cost, each solve is divided
by the mean of the two measurements around it, and the median and quartiles of these paired ratios
are reported.

    python benchmarks/bench_likelihood.py [--threads 1] [--repeats 5] [--oracle-repeats 25] [--skip-trap]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.likelihood import log_likelihood


def score_vjp_cost(score_fn, x, repeats=10):
    """Seconds for one score evaluation with grad + one VJP (what each likelihood RHS needs)."""
    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
    probe = torch.randn_like(x)

    def once():
        xi = x.detach().requires_grad_(True)
        s = score_fn(xi, t)
        torch.autograd.grad(s, xi, probe)

    once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats


def hand_written_solve(score_fn, sde, x, rtol, generator):
    """``(NFE, seconds, final state)`` of the likelihood ODE with the barest right-hand side
    (Rademacher probe; the state is ``[z, int -g^2 div s / 2]``, as the library's)."""
    import numpy as np
    from scipy.integrate import solve_ivp
    from threadpoolctl import threadpool_limits

    b, d = x.shape[0], x[0].numel()
    probe = torch.where(torch.randn(x.shape, generator=generator) >= 0, 1.0, -1.0)

    def fun(t, y):
        y2 = y.reshape(b, d + 1)
        xt = torch.from_numpy(y2[:, :d].astype(np.float32)).reshape(x.shape).requires_grad_(True)
        with torch.enable_grad():
            s = score_fn(xt, torch.full((b,), t))
            (vjp,) = torch.autograd.grad(s, xt, probe)
        c = -0.5 * float(sde.diffusion(t)) ** 2
        out = np.empty((b, d + 1))
        np.multiply(y2[:, :d], float(sde.drift_coef(t)), out=out[:, :d])
        out[:, :d] += c * s.detach().numpy().reshape(b, d)
        out[:, d] = c * torch.linalg.vecdot(vjp.reshape(b, d), probe.reshape(b, d)).numpy()
        return out.reshape(-1)

    y0 = np.concatenate([x.double().numpy().reshape(b, d), np.zeros((b, 1))], 1).reshape(-1)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        sol = solve_ivp(fun, (1e-5, sde.T), y0, rtol=rtol, atol=rtol)
    return sol.nfev, time.perf_counter() - t0, sol.y[:, -1].reshape(b, d + 1)


def quartiles(values) -> str:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"{q2:.2f} [{q1:.2f}-{q3:.2f}]"


def row(name, score_fn, sde, x, estimator, rtol, repeats, blas_threads=1, floor=False):
    """Each repeat: score+VJP timing, (floor solve), library solve, score+VJP timing; the ratios are
    paired (each solve against the mean of the two timings around it), their median reported."""
    # warm-up: one loose solve first, so one-time costs (oneDNN primitives, allocator) stay out of the timing
    log_likelihood(score_fn, sde, x, estimator=estimator, rtol=1e-1, atol=1e-1, blas_threads=blas_threads)
    walls, ratios, floor_ratios, over_floor = [], [], [], []
    timed = estimator != "exact"
    for _ in range(repeats):
        before = score_vjp_cost(score_fn, x) if timed else None
        if floor:
            nfe, sec, _ = hand_written_solve(score_fn, sde, x, rtol, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        res = log_likelihood(score_fn, sde, x, estimator=estimator, rtol=rtol, atol=rtol,
                             blas_threads=blas_threads, generator=torch.Generator().manual_seed(0))
        walls.append(time.perf_counter() - t0)
        if timed:
            unit = (before + score_vjp_cost(score_fn, x)) / 2
            ratios.append(walls[-1] / res.nfe / unit)
        if floor:
            floor_ratios.append(sec / nfe / unit)
            over_floor.append(walls[-1] / res.nfe / (sec / nfe))
    wall = statistics.median(walls)
    nll = -res.logp.mean().item() / x[0].numel()
    ratio = quartiles(ratios) if ratios else "-"
    print(f"{name:<10} {estimator:<11} {rtol:>7.0e} {res.nfe:>5} {wall:8.2f} {wall / x.shape[0] * 1e3:10.1f} "
          f"{ratio:>17} {nll:10.4f}", flush=True)
    if floor:
        print(f"{'':<10} hand-written solve (floor): ratio {quartiles(floor_ratios)}, "
              f"library / floor {quartiles(over_floor)}", flush=True)
    return wall


def unet_score(channels, size):
    from scoresde.nets import UNet
    from scoresde.score import NetworkScore

    torch.manual_seed(0)
    net = UNet(in_channels=channels, image_size=size).eval()
    return NetworkScore(net, VPSDE())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="paired repeats of the U-Net rows")
    ap.add_argument("--oracle-repeats", type=int, default=25, help="paired repeats of the oracle rows")
    ap.add_argument("--skip-trap", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sde = VPSDE()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'score':<10} {'estimator':<11} {'rtol':>7} {'NFE':>5} {'wall s':>8} {'ms/example':>10} "
          f"{'ratio [quartiles]':>17} {'nats/dim':>10}")
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    unet = unet_score(1, 8)
    for rtol in (1e-3, 1e-5):
        for est in ("rademacher", "gaussian"):
            row("unet", unet, sde, x, est, rtol, args.repeats)
    gm = GaussianMixture.random(64, 3, seed=0)
    xo = gm.sample(64, 0.0, sde, generator=torch.Generator().manual_seed(1))
    for rtol in (1e-3, 1e-5):
        for est in ("rademacher", "exact"):
            reps = args.oracle_repeats if est != "exact" else 1
            row("oracle-64d", gm.score_fn(sde), sde, xo, est, rtol, reps, floor=est == "rademacher")
    if args.skip_trap:
        return
    print("\nthread pools, 16x3x32x32 (49,152 dims), U-Net 3x32x32, rtol 1e-3:")
    torch.set_num_threads(2)
    big = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    unet32 = unet_score(3, 32)
    for label, blas in (("torch 2 thr, BLAS uncapped", None), ("torch 2 thr, BLAS capped to 1", 1)):
        t0 = time.perf_counter()
        res = log_likelihood(unet32, sde, big, rtol=1e-3, atol=1e-3, blas_threads=blas)
        wall = time.perf_counter() - t0
        print(f"  {label:<30} NFE {res.nfe:>4}  wall {wall:7.2f} s  {wall / res.nfe * 1e3:7.1f} ms/NFE")


if __name__ == "__main__":
    main()
