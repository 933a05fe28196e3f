"""The command line, in subprocesses: a Hydra multirun sweep with the joblib launcher, DDP on 2 CPU
processes (gloo) with sharded sampling and likelihood, killing a training process and resuming it, and the
errors for unknown options and invalid values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_app_run import TOY_BASE

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

TOY = [*TOY_BASE, "validation.bpd_examples=0", "num_samples=30", "likelihood.num_examples=10"]


def _env(full_error: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return env


def _run(
    args: list[str], cwd: Path, timeout: float = 240, full_error: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scoresde.run", *args],
        cwd=cwd,
        env=_env(full_error),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def test_multirun_sweep_with_the_joblib_launcher(tmp_path):
    proc = _run(
        [
            "-m",
            *TOY,
            "sde=vp,subvp,ve",
            "solver=em,pc,ode",
            "solver.eps=0.01",
            "trainer.max_steps=40",  # a few steps, so that no sampler diverges on an untrained score
            "trainer.val_check_interval=40",
            "hydra/launcher=local",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
        timeout=400,
    )
    _ok(proc)
    runs = sorted((tmp_path / "sweep").glob("[0-9]*"), key=lambda p: int(p.name))
    assert len(runs) == 9
    combos = set()
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        combos.add(
            tuple(
                line.split("=")[1]
                for line in overrides.splitlines()
                if line.startswith(("- sde=", "- solver="))
            )
        )
        assert metrics["global_step"] == 40 and (run / "samples.png").is_file()
        assert metrics["sampling"]["num_samples"] == 30
    assert len(combos) == 9


def test_ddp_on_two_cpu_processes_shards_sampling_and_likelihood(tmp_path):
    run = tmp_path / "ddp"
    proc = _run(
        [
            *TOY,
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "validation.bpd_examples=4",
            "checkpoint.every_n_steps=2",
            "solver.steps=10",
            "num_samples=9",
            "likelihood.num_examples=7",
            "likelihood.batch_size=2",
            "likelihood.per_example=true",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
        timeout=400,
    )
    _ok(proc)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["likelihood"]["num_examples"] == 7
    x = torch.load(run / "samples.pt", weights_only=False)
    assert x["samples"].shape == (9, 2) and x["seeds"] == list(range(9))
    # a single process with the same checkpoint and seeds gives the same samples and likelihoods
    from scoresde.tasks import compose_config
    from scoresde.tasks.likelihood import evaluate_likelihood
    from scoresde.tasks.sample import generate
    from scoresde.train import load_score_model

    cfg = compose_config(*TOY, "solver.steps=10", "likelihood.num_examples=7", "likelihood.per_example=true")
    model = load_score_model(run / "checkpoints" / "last.ckpt")
    from scoresde.tasks.common import datamodule_from_config, solver_from_config
    from scoresde.train.build import plain

    single, _ = generate(model, solver_from_config(cfg), list(range(9)), batch_size=4)
    torch.testing.assert_close(single, x["samples"], rtol=1e-4, atol=1e-4)
    summary, _ = evaluate_likelihood(model, datamodule_from_config(cfg), plain(cfg.likelihood), 0)
    # one ODE solve per example: the same values whatever the sharding and batching
    assert summary["nll_nats"] == pytest.approx(metrics["likelihood"]["nll_nats"], abs=1e-6)
    # task=sample under DDP
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = _run(
        [
            *TOY,
            "task=sample",
            "trainer=ddp",
            f"ckpt_path={ckpt}",
            "solver.steps=10",
            "num_samples=5",
            f"hydra.run.dir={tmp_path}/s",
        ],
        tmp_path,
        timeout=200,
    )
    _ok(proc)
    torch.testing.assert_close(
        torch.load(tmp_path / "s" / "samples.pt", weights_only=False)["samples"],
        x["samples"][:5],
        rtol=1e-4,
        atol=1e-4,
    )


def test_kill_a_training_process_and_resume(tmp_path):
    run = tmp_path / "run"
    args = [
        *TOY,
        "trainer.val_check_interval=100000",
        "checkpoint.every_n_steps=5",
        "task.sample=false",
        "task.likelihood=false",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoresde.run", *args, "trainer.max_steps=100000"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = run / "checkpoints" / "last.ckpt"
    step = 0
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                step = torch.load(last, weights_only=False)["global_step"]  # atomic: never a partial file
                if step >= 10:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] >= 10 and saved["global_step"] % 5 == 0
    target = saved["global_step"] + 7
    resumed = _run([*args, "ckpt_path=last", f"trainer.max_steps={target}"], tmp_path)
    _ok(resumed)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["start_step"] == saved["global_step"] and metrics["global_step"] == target
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == target
    assert int(final["averaging_state"]["n_averaged"]) == target + 1
    assert float(final["optimizer_states"][0]["state"][0]["step"]) == target


def test_cli_errors_are_clear(tmp_path):
    proc = _run(["sde=nonexistent"], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert (
        "Could not find 'sde/nonexistent'" in proc.stderr and "subvp" in proc.stderr and "ve" in proc.stderr
    )
    proc = _run(["module.lr=-1", f"hydra.run.dir={tmp_path}/bad"], tmp_path, timeout=120, full_error=False)
    assert proc.returncode == 1
    assert "module: invalid ScoreModel settings: lr must be > 0, got -1" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.lstrip().startswith("error: invalid configuration")
    assert not (tmp_path / "bad" / "checkpoints" / "last.ckpt").exists()
    proc = _run(["trainer.max_steps=0", f"hydra.run.dir={tmp_path}/b2"], tmp_path, 120, full_error=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "trainer.max_steps=0: the number of training steps must be >= 1" in proc.stderr
    proc = _run(
        ["task=sample", f"ckpt_path={tmp_path}/missing.ckpt", f"hydra.run.dir={tmp_path}/s"],
        tmp_path,
        timeout=120,
        full_error=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"checkpoint file not found: {tmp_path}/missing.ckpt" in proc.stderr
