"""The app end to end, in-process through the compose API (fast): a fast_dev_run of every sde x solver on
toy2d, the main job's config at a tiny step count, and the sample / likelihood tasks with per-sample seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import SEED_STRIDE
from scoresde.train import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

#: a tiny toy2d run (shared with the CLI tests, which add their own sampling/likelihood sizes)
TOY_BASE = [
    "experiment=toy2d",
    "data.n_train=512",
    "data.n_val=128",
    "data.n_test=128",
    "data.batch_size=64",
    "model.hidden=32",
    "model.depth=2",
    "model.embed_dim=16",
    "progress_bar_refresh_rate=0",
    "logger=none",
    "trainer.enable_model_summary=false",
    "threads=1",
    "validation.num_samples=20",
    "validation.solver.steps=5",
    "likelihood.rtol=1e-2",
    "likelihood.atol=1e-2",
]
TOY = [*TOY_BASE, "validation.bpd_examples=4", "validation.bpd_rtol=1e-2", "num_samples=20",
       "likelihood.num_examples=6"]
#: solver settings that keep a test fast; sweeps use the common keys (eps, denoise) only
FAST_SOLVER = {
    "em": ["solver.steps=20"],
    "pc": ["solver.steps=10"],
    "ode": ["solver.rtol=1e-2", "solver.atol=1e-2"],
}


@pytest.mark.parametrize("solver", ["em", "pc", "ode"])
@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_fast_dev_run_every_sde_and_solver(tmp_path, sde, solver):
    metrics = run_task(
        compose_config(
            *TOY,
            f"sde={sde}",
            f"solver={solver}",
            *FAST_SOLVER[solver],
            "trainer.fast_dev_run=true",
            output_dir=tmp_path,
        )
    )
    # fast_dev_run makes sampling and likelihood smoke tests too (scoresde.tasks.train.SMOKE_TEST)
    from scoresde.tasks.train import SMOKE_TEST

    n = SMOKE_TEST["samples"]
    assert metrics["global_step"] == 1
    assert metrics["sampling"]["num_samples"] == n and metrics["sampling"]["nfe_per_batch"] > 0
    x = torch.load(tmp_path / "samples.pt", weights_only=False)["samples"]
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    assert math.isfinite(metrics["likelihood"]["nll_nats"])
    assert Image.open(tmp_path / "samples.png").size[0] > 100
    likelihood = json.loads((tmp_path / "metrics.json").read_text())["likelihood"]
    assert likelihood["num_examples"] == SMOKE_TEST["examples"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The main job's config (no overrides but the step count and test-sized sampling/likelihood)."""
    run = tmp_path_factory.mktemp("digits")
    cfg = compose_config(
        "threads=1",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "checkpoint.every_n_steps=3",
        "validation.num_samples=16",
        "validation.bpd_examples=4",
        "validation.solver.steps=5",
        "solver.steps=25",
        "num_samples=12",
        "likelihood.num_examples=6",
        "trainer.log_every_n_steps=2",
        output_dir=run,
    )
    return run, cfg, run_task(cfg)


def test_main_job_config_at_a_tiny_step_count(digits_run):
    run, cfg, metrics = digits_run
    assert cfg.data._target_.endswith("DigitsDataModule") and cfg.model._target_.endswith("UNet")
    assert metrics["global_step"] == 6 and metrics["ema_updates"] == 6
    for name in (
        "checkpoints/last.ckpt",
        "weights_ema.pt",
        "samples.png",
        "samples.pt",
        "samples.npz",
        "metrics.json",
        "logs/metrics.csv",
        "samples/val_step0000006.png",
    ):
        assert (run / name).is_file(), name
    like = metrics["likelihood"]
    assert like["split"] == "test" and like["num_examples"] == 6 and like["levels"] == 17
    assert math.isfinite(like["bpd"]) and like["bpd"] > 0 and like["num_nonfinite"] == 0
    assert metrics["val_bpd"] is not None and metrics["val_loss"] is not None
    npz = np.load(run / "samples.npz")
    # the paper's layout under `samples` (uint8 NHWC 0..255), the rest under other keys
    assert npz["samples"].shape == (12, 8, 8, 1) and npz["samples"].dtype == np.uint8
    assert npz["samples_model"].shape == (12, 1, 8, 8) and npz["samples_int"].max() <= 16
    assert list(npz["seeds"]) == [i for i in range(12)]  # seed 0: seeds 0 * 1e6 + i
    grid = Image.open(run / "samples.png")
    assert grid.mode == "L" and min(grid.size) >= 64
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/loss" in header


def test_sample_task_reproduces_samples_from_their_seeds(digits_run, tmp_path):
    run, _, _ = digits_run
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "s"
    metrics = run_task(
        compose_config(
            "task=sample",
            "threads=1",
            f"ckpt_path={ckpt}",
            "solver.steps=25",
            "sample_seeds=[3,7]",
            output_dir=out,
        )
    )
    x = torch.load(out / "samples.pt", weights_only=False)["samples"]
    ref = torch.load(run / "samples.pt", weights_only=False)["samples"]
    torch.testing.assert_close(x, ref[[3, 7]], rtol=1e-4, atol=1e-4)
    assert metrics["sampling"]["num_samples"] == 2 and (out / "samples.png").is_file()
    # another run seed gives other samples
    run_task(
        compose_config(
            "task=sample",
            "threads=1",
            f"ckpt_path={ckpt}",
            "solver.steps=25",
            "num_samples=2",
            "seed=1",
            output_dir=tmp_path / "s1",
        )
    )
    other = torch.load(tmp_path / "s1" / "samples.pt", weights_only=False)
    assert other["seeds"] == [SEED_STRIDE, SEED_STRIDE + 1] and not torch.allclose(other["samples"], ref[:2])


def test_sample_task_with_the_ode(digits_run, tmp_path):
    run, _, _ = digits_run
    metrics = run_task(
        compose_config(
            "task=sample",
            "threads=1",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "solver=ode",
            "solver.rtol=1e-3",
            "solver.atol=1e-3",
            "num_samples=5",
            output_dir=tmp_path,
        )
    )
    assert metrics["sampling"]["nfe_per_batch"] > 2
    assert torch.load(tmp_path / "samples.pt", weights_only=False)["samples"].shape == (5, 1, 8, 8)


def test_likelihood_task_matches_the_training_run(digits_run, tmp_path):
    run, _, train_metrics = digits_run
    metrics = run_task(
        compose_config(
            "task=likelihood",
            "threads=1",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "likelihood.num_examples=6",
            "likelihood.batch_size=4",
            output_dir=tmp_path,
        )
    )
    # same per-example seeds, other batching: the same bits/dim up to the ODE tolerance (batched steps)
    assert metrics["likelihood"]["bpd"] == pytest.approx(train_metrics["likelihood"]["bpd"], abs=2e-2)
    values = torch.load(tmp_path / "likelihood.pt", weights_only=False)["values"]
    assert values.shape == (6,)
    with pytest.raises(CheckpointError, match="same data="):
        run_task(
            compose_config(
                "task=likelihood",
                "threads=1",
                f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                "data=toy2d",
                output_dir=tmp_path / "bad",
            )
        )


def test_sample_task_needs_a_checkpoint(tmp_path):
    from scoresde.tasks.common import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path"):
        run_task(compose_config("task=sample", output_dir=tmp_path))
