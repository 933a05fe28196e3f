"""Issue 12, one regression test (or more) per numbered defect: a run directory belongs to one run, a resume
keeps the training curve and refuses a changed model, every setting is checked before the first training
step, user errors end with ``error: ...`` and exit status 1, Ctrl-C says how to resume, ODE samples do
not depend on the batch."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_app_cli import _env
from test_app_run import TOY_BASE

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import ConfigError
from scoresde.train import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = [
    *TOY_BASE,
    "validation.bpd_examples=0",
    "num_samples=8",
    "likelihood.num_examples=4",
    "trainer.val_check_interval=1000",
    "checkpoint.every_n_steps=3",
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(run: Path) -> dict[str, str]:
    """Digests of a training run's files (not of the subfolders that tasks on it write)."""
    task_dir = re.compile(r"^(\.hydra-\w+|(sample|likelihood|evaluate)(-\d+)?)$")
    return {
        str(p.relative_to(run)): _digest(p)
        for p in sorted(run.rglob("*"))
        if p.is_file() and not task_dir.match(p.relative_to(run).parts[0])
    }


def _train(run: Path, *overrides: str) -> dict:
    return run_task(compose_config(*TOY, *overrides, output_dir=run))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished toy run of 6 steps (checkpoints at 3 and 6) with samples, likelihood, CSV log."""
    run = tmp_path_factory.mktemp("trained")
    _train(run, "trainer.max_steps=6", "logger=csv", "trainer.log_every_n_steps=1")
    return run


def _copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


# ---------------------------------------------------------------------------------------------- defect 1
def test_training_into_a_directory_with_a_checkpoint_is_refused(trained, tmp_path):
    run = _copy(trained, tmp_path)
    before = _digests(run)
    with pytest.raises(ConfigError) as err:
        _train(run, "trainer.max_steps=4")
    message = str(err.value)
    assert str(run / "checkpoints" / "last.ckpt") in message
    assert "ckpt_path=last" in message and "another directory" in message
    # resuming ANOTHER checkpoint into this directory would overwrite its checkpoint as well
    other = tmp_path / "other.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", other)
    with pytest.raises(ConfigError, match="holds another run's checkpoint"):
        _train(run, "trainer.max_steps=9", f"ckpt_path={other}")
    assert _digests(run) == before


def test_training_into_a_directory_with_a_tasks_results_is_refused(trained, tmp_path):
    out = tmp_path / "s"
    run_task(compose_config(*TOY, "task=sample", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                            output_dir=out))
    with pytest.raises(ConfigError, match="already holds the results of another run"):
        _train(out, "trainer.max_steps=2")


# ---------------------------------------------------------------------------------------------- defect 2
@pytest.mark.parametrize("task", ["sample", "likelihood"])
def test_tasks_on_a_trained_model_never_write_over_the_training_run(trained, tmp_path, task):
    run = _copy(trained, tmp_path)
    before = _digests(run)
    ckpt = run / "checkpoints" / "last.ckpt"
    first = run_task(compose_config(*TOY, f"task={task}", f"ckpt_path={ckpt}", output_dir=run))
    second = run_task(compose_config(*TOY, f"task={task}", f"ckpt_path={ckpt}", output_dir=run))
    assert _digests(run) == before  # metrics.json, samples.*, weights, checkpoints, logs untouched
    assert json.loads((run / "metrics.json").read_text())["task"] == "train"
    assert json.loads((run / task / "metrics.json").read_text())["task"] == task == first["task"]
    assert json.loads((run / f"{task}-2" / "metrics.json").read_text())["task"] == second["task"]


# ---------------------------------------------------------------------------------------------- defect 3
def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _loss_steps(rows) -> list[int]:
    return [int(float(r["step"])) for r in rows if r.get("train/loss")]


def test_resume_continues_the_csv_log_keeping_earlier_rows(trained, tmp_path):
    run = _copy(trained, tmp_path)
    before = _rows(run)
    assert _loss_steps(before) == list(range(6))
    _train(run, "trainer.max_steps=9", "ckpt_path=last", "logger=csv", "trainer.log_every_n_steps=1")
    after = _rows(run)
    assert _loss_steps(after) == list(range(9))
    old = {(r["step"], r["train/loss"]) for r in before if r.get("train/loss")}
    assert old <= {(r["step"], r["train/loss"]) for r in after}  # the earlier values themselves


def test_resuming_a_finished_run_with_fewer_steps_keeps_the_log(trained, tmp_path):
    run = _copy(trained, tmp_path)
    (run / "metrics.json").unlink()
    _train(run, "trainer.max_steps=4", "ckpt_path=last", "logger=csv", "trainer.log_every_n_steps=1")
    assert _loss_steps(_rows(run)) == list(range(6))


# ---------------------------------------------------------------------------------------------- defect 4
def test_resume_with_another_sde_is_a_checkpoint_error_listing_the_differences(trained, tmp_path):
    run = _copy(trained, tmp_path)
    before = _digests(run)
    with pytest.raises(CheckpointError) as err:
        _train(run, "trainer.max_steps=9", "ckpt_path=last", "sde=ve")
    message = str(err.value)
    assert "sde._target_: 'scoresde.sde.VPSDE' in the checkpoint, 'scoresde.sde.VESDE' now" in message
    with pytest.raises(CheckpointError, match=r"loss\.reduce: 'mean' in the checkpoint, 'sum' now"):
        _train(run, "trainer.max_steps=9", "ckpt_path=last", "module.loss.reduce=sum")
    with pytest.raises(CheckpointError, match=r"lr: 0\.001 in the checkpoint, 0\.01 now"):
        _train(run, "trainer.max_steps=9", "ckpt_path=last", "module.lr=1e-2")
    with pytest.raises(CheckpointError, match=r"ema\.decay: 0\.999 in the checkpoint, 0\.99 now"):
        _train(run, "trainer.max_steps=9", "ckpt_path=last", "ema.decay=0.99")
    with pytest.raises(CheckpointError, match=r"data\.dataset: 'moons' in the checkpoint, 'swissroll' now"):
        _train(run, "trainer.max_steps=9", "ckpt_path=last", "data.dataset=swissroll")
    assert _digests(run) == before
    # keys that may change on resume (docs/app.md): budgets, logging, validation, checkpoint interval
    metrics = _train(
        run, "trainer.max_steps=8", "ckpt_path=last", "checkpoint.every_n_steps=4", "logger=csv",
        "validation.num_samples=5", "trainer.val_check_interval=500",
    )
    assert metrics["start_step"] == 6 and metrics["global_step"] == 8


def test_sampling_with_a_changed_model_setting_is_a_checkpoint_error(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"sde\.beta_max: 20\.0 in the checkpoint, 5 now"):
        run_task(compose_config(*TOY, "task=sample", f"ckpt_path={ckpt}", "sde.beta_max=5",
                                output_dir=tmp_path / "a"))
    with pytest.raises(CheckpointError, match=r"sde\._target_"):
        run_task(compose_config(*TOY, "task=sample", f"ckpt_path={ckpt}", "sde=subvp",
                                output_dir=tmp_path / "b"))
    # the checkpoint's own settings given again are fine
    run_task(compose_config(*TOY, "task=sample", f"ckpt_path={ckpt}", "sde=vp", "model.hidden=32",
                            output_dir=tmp_path / "c"))


# ---------------------------------------------------------------------------------------------- defect 5
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("likelihood.estimator=foo", "unknown estimator 'foo'"),
        ("likelihood.method=FOO", "method 'FOO' is not a scipy solve_ivp method"),
    ],
)
def test_likelihood_settings_are_checked_before_training(tmp_path, override, message):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        _train(tmp_path, "trainer.max_steps=50", override)
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_an_unwritable_checkpoint_directory_fails_before_training(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to("/proc")  # not writable, even for root
    with pytest.raises(ConfigError, match=r"cannot write the checkpoint directory .*checkpoints"):
        _train(run, "trainer.max_steps=50")
    assert not (run / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------- defect 6
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["solver=pc", "solver.snr=-1"], r"solver: snr must be >= 0"),
        (["solver.eps=-1"], r"solver: eps must lie in \(0, 1\)"),
        (["solver=ode", "solver.rtol=0"], r"solver: rtol and atol must be > 0"),
        (["sde.beta_max=-1"], r"sde: need 0 < beta_min < beta_max"),
        (["seed=abc"], r"seed='abc': the seed must be an integer"),
        (["sample_seeds=[a,b]"], r"sample_seeds=.*must be a non-empty list of integer seeds"),
        (["module.lr=-1"], r"module: invalid ScoreModel settings: lr must be > 0"),
        (["ema.decay=1.5"], r"EMA decay must lie in \[0, 1\)"),
        (["checkpoint.every_n_steps=0"], r"every_n_steps must be >= 1"),
        (["trainer=gpu"], r"no CUDA device is available; use trainer=cpu"),
    ],
)
def test_invalid_settings_are_config_errors_before_training(tmp_path, overrides, message):
    if "trainer=gpu" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=message):
        _train(tmp_path, "trainer.max_steps=50", *overrides)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.ch=0"], r"module: network scoresde\.nets\.UNet: .*got 0"),
        (["data=toy2d"], r"UNet takes images but the data are vectors of shape \(2,\); .*model=mlp"),
        (["data=folder"], r"data\.root"),
    ],
)
def test_invalid_settings_of_the_main_job_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_task(compose_config("threads=1", "logger=none", *overrides, output_dir=tmp_path))


def _cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scoresde.run", *args],
        cwd=cwd,
        env=_env(full_error=False),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _is_user_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.lstrip().startswith("error: ") and text in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_cli_user_errors_end_with_error_and_exit_status_1(trained, tmp_path):
    _is_user_error(_cli([*TOY, "solver=pc", "solver.snr=-1", f"hydra.run.dir={tmp_path}/a"], tmp_path),
                   "snr must be >= 0")
    (tmp_path / "afile").write_text("")
    _is_user_error(_cli([*TOY, f"hydra.run.dir={tmp_path}/afile/run"], tmp_path),
                   "cannot create or write the run directory")
    _is_user_error(_cli([*TOY, "hydra.run.dir=/proc/scoresde-run"], tmp_path),
                   "cannot create or write the run directory")
    _is_user_error(
        _cli(["threads=1", "task=likelihood", f"ckpt_path={trained}/checkpoints/last.ckpt",
              f"hydra.run.dir={tmp_path}/l"], tmp_path),
        "Pass the same data=",
    )
    run = _copy(trained, tmp_path)
    _is_user_error(_cli([*TOY, f"hydra.run.dir={run}"], tmp_path), "ckpt_path=last")
    # the training run's record is not replaced by a task run in its directory
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("# the training run's config\n")
    hydra_before = _digest(run / ".hydra" / "config.yaml")
    proc = _cli([*TOY, "task=sample", f"ckpt_path={run}/checkpoints/last.ckpt", f"hydra.run.dir={run}"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / ".hydra-sample" / "config.yaml").is_file() and (run / "sample" / "samples.png").is_file()
    assert _digest(run / ".hydra" / "config.yaml") == hydra_before


@pytest.mark.slow
def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(tmp_path):
    run = tmp_path / "run"
    args = [*TOY, "checkpoint.every_n_steps=5", "task.sample=false", "task.likelihood=false",
            f"hydra.run.dir={run}", "trainer.max_steps=100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoresde.run", *args],
        cwd=tmp_path,
        env=_env(full_error=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not last.is_file():
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "error: training interrupted at step" in err and str(last) in err
    assert f"hydra.run.dir={run} ckpt_path=last" in err


# ---------------------------------------------------------------------------------------------- defect 7
def test_ode_samples_do_not_depend_on_the_batch_size(trained, tmp_path):
    """Needs core13's ``ProbabilityFlowODE(per_example=True)`` set in conf/solver/ode.yaml (issue 12 item 7):
    each example then has its own adaptive solve."""
    ckpt = trained / "checkpoints" / "last.ckpt"
    x = {}
    for batch in (3, 8):
        out = tmp_path / f"b{batch}"
        run_task(compose_config(*TOY, "task=sample", f"ckpt_path={ckpt}", "solver=ode", "solver.rtol=1e-3",
                                "solver.atol=1e-3", "num_samples=8", f"sample_batch_size={batch}",
                                output_dir=out))
        x[batch] = torch.load(out / "samples.pt", weights_only=False)["samples"]
    # bit-identical up to float rounding of a batched network call (today's main differs by several units)
    torch.testing.assert_close(x[3], x[8], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- defect 8
def test_sample_task_checks_the_data(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"data_shape: \[2\] in the checkpoint, \[1, 8, 8\] now"):
        run_task(compose_config("threads=1", "task=sample", f"ckpt_path={ckpt}", "data=digits",
                                output_dir=tmp_path))


def test_sample_task_with_ckpt_path_last_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path=<training run directory>/checkpoints/last\.ckpt"):
        run_task(compose_config("task=sample", "ckpt_path=last", output_dir=tmp_path))


def test_stale_temporary_files_of_a_killed_save_are_removed_on_resume(trained, tmp_path):
    run = _copy(trained, tmp_path)
    stale = run / "checkpoints" / ".last.ckpt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    (run / "metrics.json").unlink()
    _train(run, "trainer.max_steps=7", "ckpt_path=last")
    assert not stale.exists() and not list((run / "checkpoints").glob(".*.tmp"))


def test_explicit_sample_seeds_are_documented_as_seeds():
    root = Path(__file__).parents[1]
    docs = (root / "docs" / "app.md").read_text()
    assert "regenerates samples 3 and 17 of a `seed=0` run" in docs and "[s*1000000+3, s*1000000+17]" in docs
    assert "samples 3 and 17 of a seed=0 run" in (root / "conf" / "config.yaml").read_text()
