"""Issue 22 ("Reliability, round two"), one regression test (or more) per numbered item: any seed trains,
a refused run changes nothing, every failure is a clear ``error:`` line and a non-zero exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_app_cli import _env

pytestmark = pytest.mark.usefixtures("one_thread")

#: the tiniest toy run that still trains, samples and evaluates the likelihood (seconds)
TINY = [
    "experiment=toy2d",
    "data.n_train=256",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=64",
    "model.hidden=16",
    "model.depth=1",
    "model.embed_dim=8",
    "progress_bar_refresh_rate=0",
    "trainer.enable_model_summary=false",
    "threads=1",
    "validation.bpd_examples=0",
    "validation.num_samples=4",
    "num_samples=4",
    "likelihood.num_examples=2",
    "likelihood.bound_samples=2",
    "checkpoint.every_n_steps=2",
    "solver.steps=5",
    "trainer.max_steps=2",
]


def _cli(args: list[str], cwd: Path, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scoresde.run", *args],
        cwd=cwd,
        env=_env(full_error=False),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def _is_user_error(proc: subprocess.CompletedProcess, *texts: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for text in texts:
        assert text in proc.stderr, proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------------ item 1
def test_a_seed_sweep_trains_through_the_app_with_the_csv_logger(tmp_path):
    """Any seed != 0 crashed in Lightning's hparams merge (the data module's ``seed`` vs the model's)."""
    sweep = tmp_path / "sweep"
    proc = _cli(["-m", *TINY, "logger=csv", "seed=0,1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [torch.load(sweep / str(k) / "samples.pt", weights_only=False)["samples"] for k in range(3)]
    assert not torch.equal(samples[0], samples[1]) and not torch.equal(samples[1], samples[2])
    hparams = (sweep / "1" / "logs" / "hparams.yaml").read_text()
    assert "seed: 1" in hparams
