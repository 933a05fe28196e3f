"""Machinery cost of the samplers: time per step beyond the score function.

    machinery per step = (solver wall time - time inside score_fn) / steps        (EM, PC)
    overhead per NFE   = (solver wall time - time inside score_fn) / NFE          (ODE)

for a trivial score (the exact score of N(0, I) data: the machinery alone) and for the small U-Net,
batch 64 of 1x8x8 images, per solver and SDE, against a hand-written Euler-Maruyama loop (the
floor). Targets: EM through torchsde <= 1.5x the floor, PC <= 2x, ODE <= 30 us per NFE beyond the
score call.

Two floors: the *fused* loop (three tensor ops per step besides the score and the noise draw; the
ratios are against it) and the *plain* loop, the update written as the equation reads through the
SDE's API. Two reference rows show what the third-party code costs by itself: ``torchsde alone``
(``sdeint`` with a drift and diffusion that cost nothing and fresh Gaussian increments) and
scipy's RK45 on a numpy right-hand side of the same size.

The machine is shared and noisy: every row is run ``--repeats`` times, the rows of one SDE
interleaved, and the best run counts.

    python benchmarks/bench_solvers.py [--threads 1] [--steps 500] [--unet-steps 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.solvers import EulerMaruyama, PredictorCorrector, ProbabilityFlowODE


class TimedScore:
    """Accumulates the wall time spent inside the score function."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def hand_em(score, sde, shape, steps, generator):
    """The floor: a fused Euler-Maruyama loop over the reverse SDE, nothing else (scalar
    coefficients as Python floats, three tensor ops per step besides the score and the noise)."""
    x = torch.randn(shape, generator=generator) * sde.prior_std
    ts = torch.linspace(sde.T, sde.sampling_eps, steps + 1).tolist()
    b = shape[0]
    for i in range(steps):
        t, dt = ts[i], ts[i] - ts[i + 1]
        s = score(x, torch.full((b,), t))
        g2 = float(sde.diffusion(t)) ** 2
        x = torch.add(x * (1.0 - float(sde.drift_coef(t)) * dt), s, alpha=g2 * dt)
        x = torch.add(x, torch.randn(shape, generator=generator), alpha=math.sqrt(g2 * dt))
    return x


def plain_em(score, sde, shape, steps, generator):
    """The plain floor: Euler-Maruyama as the equation reads,
    ``x <- x - [f(x, t) - g(t)^2 score] dt + g(t) sqrt(dt) z``, through the SDE's API."""
    x = sde.prior_sample(shape, generator=generator)
    ts = torch.linspace(sde.T, sde.sampling_eps, steps + 1).tolist()
    b = shape[0]
    for i in range(steps):
        t, dt = ts[i], ts[i] - ts[i + 1]
        drift = sde.reverse_drift(x, t, score(x, torch.full((b,), t)))
        x = x - drift * dt + sde.diffusion(t) * math.sqrt(dt) * torch.randn(shape, generator=generator)
    return x


def torchsde_alone(score, sde, shape, steps, generator):
    """``torchsde.sdeint`` (Euler) with a drift and diffusion that cost nothing (the score is called
    so that its time is subtracted like everywhere else) and fresh Gaussian increments: what
    torchsde's own loop costs per step, the part no wrapper can remove."""
    import torchsde
    from torchsde._brownian.brownian_base import BaseBrownian

    b, d = shape[0], math.prod(shape[1:])
    zero, t_batch = torch.zeros(b, d), torch.full((b,), 0.5)

    class Fresh(BaseBrownian):
        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            return torch.randn((b, d), generator=generator)

        def __repr__(self):
            return "Fresh"

        dtype = property(lambda self: torch.float32)
        device = property(lambda self: torch.device("cpu"))
        shape = property(lambda self: (b, d))
        levy_area_approximation = property(lambda self: "none")

    class Free(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            score(y, t_batch)
            return zero

        def g(self, t, y):
            return zero

        def f_and_g_prod(self, t, y, v):
            return self.f(t, y), v

    x = torch.randn((b, d), generator=generator)
    h = (sde.T - sde.sampling_eps) / steps
    ts = torch.tensor([0.0, sde.T - sde.sampling_eps], dtype=torch.float64)
    return torchsde.sdeint(Free(), x, ts, bm=Fresh(), method="euler", dt=h * (1 + 1e-9))


def scipy_rk45_alone(dim: int, rtol: float = 1e-5, repeats: int = 3) -> float:
    """Microseconds per NFE of ``solve_ivp`` (RK45) itself on a ``dim``-dimensional linear ODE with a
    numpy right-hand side that costs ~nothing: scipy's own step bookkeeping, the part of the ODE
    sampler's overhead no wrapper can remove."""
    import numpy as np
    from scipy.integrate import solve_ivp

    y0 = np.random.default_rng(0).standard_normal(dim)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = solve_ivp(lambda t, y: -5.0 * y, (0.0, 1.0), y0, method="RK45", rtol=rtol, atol=rtol)
        best = min(best, (time.perf_counter() - t0) / sol.nfev)
    return best * 1e6


def gaussian_score(sde):
    """Exact score of N(0, I) data, ``-x / (m^2 + s^2)``: cheap, and stable for every SDE."""
    def score(x, t):
        var = sde.mean_coef(t) ** 2 + sde.std(t) ** 2
        return -x / var.reshape(-1, *[1] * (x.dim() - 1))
    return score


def run_once(run, score_fn):
    """(wall, time in score, score calls) of one run."""
    timed = TimedScore(score_fn)
    t0 = time.perf_counter()
    run(timed)
    return time.perf_counter() - t0, timed.seconds, timed.calls


def measure_interleaved(runs: dict, score_fn, repeats):
    """Best run (least time outside the score) of each of ``runs``, run in turn ``repeats`` times."""
    best = {}
    for _ in range(repeats):
        for name, run in runs.items():
            res = run_once(run, score_fn)
            if name not in best or res[0] - res[1] < best[name][0] - best[name][1]:
                best[name] = res
    return best


def small_unet():
    try:
        from scoresde.nets import UNet
    except ImportError:
        return None
    torch.manual_seed(0)
    net = UNet(in_channels=1, image_size=8).eval()
    return lambda x, t: net(x, 999 * t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=500, help="steps of EM/PC with the trivial score")
    ap.add_argument("--unet-steps", type=int, default=100, help="steps of EM/PC with the U-Net")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-unet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = (64, 1, 8, 8)
    scores = {"trivial": (gaussian_score, args.steps, args.repeats)}
    unet = None if args.no_unet else small_unet()
    if unet is not None:
        scores["unet"] = (lambda sde: torch.no_grad()(unet), args.unet_steps, max(1, args.repeats // 2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {shape}, "
          f"{args.steps} steps (U-Net {args.unet_steps}), best of {args.repeats} interleaved runs")
    print(f"scipy RK45 alone on {math.prod(shape)} dims (numpy RHS -5y): "
          f"{scipy_rk45_alone(math.prod(shape)):.1f} us per NFE")
    print(f"{'score':<8} {'sde':<8} {'solver':<24} {'NFE':>6} {'wall s':>8} {'in score s':>10} "
          f"{'machinery us/step':>18} {'us/NFE':>8} {'x floor':>8}")
    for sname, (make_score, steps, repeats) in scores.items():
        for sde in (VPSDE(), SubVPSDE(), VESDE()):
            score = make_score(sde)
            g = torch.Generator()
            def loop(fn, sde=sde, steps=steps, g=g):
                return lambda s: fn(s, sde, shape, steps, g.manual_seed(0))

            runs = {"hand EM loop, fused": loop(hand_em), "hand EM loop, plain": loop(plain_em)}
            if sname == "trivial":
                runs["torchsde alone"] = loop(torchsde_alone)
            solvers = {
                "EM torchsde euler": EulerMaruyama(steps=steps, denoise=False),
                "PC rd+langevin": PredictorCorrector(steps=steps, denoise=False),
                "ODE RK45 1e-5": ProbabilityFlowODE(denoise=False),
            }
            for name, solver in solvers.items():
                def sample(s, sde, shp, n, gen, solver=solver):
                    return solver.sample(s, sde, shp, generator=gen)

                runs[name] = loop(sample)
            best = measure_interleaved(runs, score, repeats)
            floor_us = (best["hand EM loop, fused"][0] - best["hand EM loop, fused"][1]) / steps * 1e6
            for name, (wall, inside, calls) in best.items():
                n_steps = None if name.startswith("ODE") else steps
                mach = (wall - inside) * 1e6
                per_step = f"{mach / n_steps:18.1f}" if n_steps else f"{'':>18}"
                ratio = f"{mach / n_steps / floor_us:8.2f}" if n_steps else f"{'':>8}"
                print(f"{sname:<8} {type(sde).__name__:<8} {name:<24} {calls:>6} {wall:8.3f} {inside:10.3f} "
                      f"{per_step} {mach / calls:8.1f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
