"""Machinery cost of the samplers: time per step beyond the score function.

    machinery per step = (solver wall time - time inside score_fn) / steps        (EM, PC)
    overhead per NFE   = (solver wall time - time inside score_fn) / NFE          (ODE)

for a trivial score (the exact score of N(0, I) data: the machinery alone) and for the small U-Net,
batch 64 of 1x8x8 images, per solver and SDE, against a hand-written Euler-Maruyama loop (the
floor). Targets: EM through torchsde <= 1.5x the floor, PC <= 2x, ODE <= 30 us per NFE beyond the
score call.

    python benchmarks/bench_solvers.py [--threads 1] [--steps 500] [--repeats 3]
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
        g2 = sde.diffusion(t) ** 2
        x = torch.add(x * (1.0 - sde.drift_coef(t) * dt), s, alpha=g2 * dt)
        x = torch.add(x, torch.randn(shape, generator=generator), alpha=math.sqrt(g2 * dt))
    return x


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


def measure(run, score_fn, repeats):
    """Best-of-``repeats`` (wall, time in score, score calls)."""
    best = None
    for _ in range(repeats):
        timed = TimedScore(score_fn)
        t0 = time.perf_counter()
        run(timed)
        wall = time.perf_counter() - t0
        if best is None or wall - timed.seconds < best[0] - best[1]:
            best = (wall, timed.seconds, timed.calls)
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
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape, steps = (64, 1, 8, 8), args.steps
    scores = {"trivial": gaussian_score}
    unet = small_unet()
    if unet is not None:
        scores["unet"] = lambda sde: torch.no_grad()(unet)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {shape}, {steps} steps, "
          f"best of {args.repeats}")
    print(f"scipy RK45 alone on {math.prod(shape)} dims (numpy RHS -5y): "
          f"{scipy_rk45_alone(math.prod(shape)):.1f} us per NFE")
    print(f"{'score':<8} {'sde':<6} {'solver':<22} {'NFE':>6} {'wall s':>8} {'in score s':>10} "
          f"{'machinery us/step':>18} {'us/NFE':>8} {'x floor':>8}")
    for sname, make_score in scores.items():
        for sde in (VPSDE(), SubVPSDE(), VESDE()):
            score = make_score(sde)
            g = torch.Generator()
            floor = measure(lambda s, sde=sde, g=g: hand_em(s, sde, shape, steps, g.manual_seed(0)), score,
                            args.repeats)
            floor_us = (floor[0] - floor[1]) / steps * 1e6
            rows = [("hand EM loop (floor)", floor, steps)]
            solvers = {
                "EM torchsde euler": EulerMaruyama(steps=steps, denoise=False),
                "PC rd+langevin": PredictorCorrector(steps=steps, denoise=False),
                "ODE RK45 1e-5": ProbabilityFlowODE(),
            }
            for name, solver in solvers.items():
                def run(s, solver=solver, sde=sde, g=g):
                    solver.sample(s, sde, shape, generator=g.manual_seed(0))
                res = measure(run, score, args.repeats)
                rows.append((name, res, steps if not name.startswith("ODE") else None))
            for name, (wall, inside, calls), n_steps in rows:
                mach = (wall - inside) * 1e6
                per_step = f"{mach / n_steps:18.1f}" if n_steps else f"{'':>18}"
                ratio = f"{mach / n_steps / floor_us:8.2f}" if n_steps else f"{'':>8}"
                print(f"{sname:<8} {type(sde).__name__:<6} {name:<22} {calls:>6} {wall:8.3f} {inside:10.3f} "
                      f"{per_step} {mach / calls:8.1f} {ratio}")


if __name__ == "__main__":
    main()
