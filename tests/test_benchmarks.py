"""The benchmark scripts still run, and their reference loops compute what they claim to.

Timings are not asserted (the machine is shared and noisy); the scripts print them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.likelihood import log_likelihood

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_likelihood  # noqa: E402
import bench_solvers  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_bench_solvers_prints_every_row():
    out = subprocess.run([sys.executable, str(BENCH / "bench_solvers.py"), "--steps", "4", "--repeats", "1",
                          "--no-unet"], capture_output=True, text=True, timeout=300, check=True).stdout
    for name in ("hand EM loop, fused", "hand EM loop, plain", "torchsde alone", "EM torchsde euler",
                 "PC rd+langevin", "ODE RK45 1e-5"):
        assert out.count(name) == 3, name  # one row per SDE
    assert "scipy RK45 alone" in out


def test_hand_loops_sample_the_mixture():
    """Both hand-written floors are real Euler-Maruyama samplers: with the exact score of a 1-D
    mixture their samples have its mean and variance."""
    sde, gm = VPSDE(), GaussianMixture.random(1, 2, seed=3)
    exact = gm.sample(20000, 0.0, sde, generator=torch.Generator().manual_seed(0))
    for loop in (bench_solvers.hand_em, bench_solvers.plain_em):
        x = loop(gm.score_fn(sde), sde, (20000, 1), 200, torch.Generator().manual_seed(1))
        assert abs(float(x.mean() - exact.mean())) < 0.05
        assert abs(float(x.var() / exact.var()) - 1) < 0.1


def test_hand_written_likelihood_solve_is_a_full_solve():
    """The likelihood benchmark's floor does the library's work: the same latent and divergence
    integral on the oracle (same probe, same tolerance)."""
    sde, gm = VPSDE(), GaussianMixture.random(8, 2, seed=0)
    x = gm.sample(16, 0.0, sde, generator=torch.Generator().manual_seed(1))
    nfe, seconds, y = bench_likelihood.hand_written_solve(gm.score_fn(sde), sde, x, 1e-5,
                                                          torch.Generator().manual_seed(0))
    res = log_likelihood(gm.score_fn(sde), sde, x, rtol=1e-5, atol=1e-5,
                         generator=torch.Generator().manual_seed(0))
    drift_part = 8 * (sde.log_mean_coef(1.0) - sde.log_mean_coef(1e-5))
    torch.testing.assert_close(torch.from_numpy(y[:, :8]).float(), res.z, rtol=0, atol=1e-3)
    torch.testing.assert_close(torch.from_numpy(y[:, 8]) + drift_part, res.delta_logp, rtol=0, atol=1e-2)
    assert seconds > 0 and nfe > 0
