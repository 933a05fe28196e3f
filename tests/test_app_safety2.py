"""Issue 22 ("Reliability, round two"), one regression test (or more) per numbered item: any seed trains,
a refused run changes nothing, every failure is a clear ``error:`` line and a non-zero exit status."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_app_cli import _env
from test_app_safety import _cli, _copy

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


def _is_user_error(proc: subprocess.CompletedProcess, *texts: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for text in texts:
        assert text in proc.stderr, proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------------ item 1
@pytest.mark.slow
def test_a_seed_sweep_trains_through_the_app_with_the_csv_logger(tmp_path):
    """Any seed != 0 crashed in Lightning's hparams merge (the data module's ``seed`` vs the model's)."""
    sweep = tmp_path / "sweep"
    proc = _cli(["-m", *TINY, "logger=csv", "seed=0,1,2", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [torch.load(sweep / str(k) / "samples.pt", weights_only=False)["samples"] for k in range(3)]
    assert not torch.equal(samples[0], samples[1]) and not torch.equal(samples[1], samples[2])
    hparams = (sweep / "1" / "logs" / "hparams.yaml").read_text()
    assert "seed: 1" in hparams


@pytest.fixture(scope="module")
def trained_cli(tmp_path_factory):
    """A finished tiny run made by the app itself (Hydra's record, run.log, checkpoint at step 2)."""
    root = tmp_path_factory.mktemp("trained_cli")
    proc = _cli([*TINY, "logger=csv", f"hydra.run.dir={root / 'run'}"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def _files(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ item 2
@pytest.mark.slow
def test_a_refused_resume_changes_no_file_and_lists_every_difference(trained_cli, tmp_path):
    run = _copy(trained_cli, tmp_path)
    before = _files(run)
    assert ".hydra/config.yaml" in before and "run.log" in before
    proc = _cli([*TINY, f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=4", "sde=ve",
                 "model.hidden=8", "data.dataset=swissroll"], tmp_path)
    _is_user_error(proc, "net.hidden: 16 in the checkpoint, 8 now",
                   "sde._target_: 'scoresde.sde.VPSDE' in the checkpoint, 'scoresde.sde.VESDE' now",
                   "data.dataset: 'moons' in the checkpoint, 'swissroll' now", ".hydra/config.yaml")
    assert _files(run) == before  # Hydra's record and run.log included; no new file either
    # an accepted resume writes its record beside the training run's
    proc = _cli([*TINY, f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _files(run)
    assert after[".hydra/config.yaml"] == before[".hydra/config.yaml"]
    assert "max_steps: 3" in (run / ".hydra-2" / "config.yaml").read_text()
    assert "ckpt_path=last" in (run / ".hydra-2" / "overrides.yaml").read_text()


# ------------------------------------------------------------------------------------------------ item 3
def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scoresde.run", *args], cwd=cwd,
                            env=_env(full_error=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(proc: subprocess.Popen, path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not path.is_file():
        time.sleep(0.1)
    assert proc.poll() is None and path.is_file(), proc.stderr.read()[-3000:] if proc.poll() else ""


@pytest.mark.slow
def test_sigterm_during_training_exits_non_zero_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    proc = _start([*TINY, "task.sample=false", "task.likelihood=false", "trainer.max_steps=100000",
                   f"hydra.run.dir={run}"], tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    try:
        _wait_for(proc, last)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (1, 143), err[-3000:]
    assert "error: training terminated (SIGTERM) at step" in err and str(last) in err, err[-3000:]
    assert f"hydra.run.dir={run} ckpt_path=last" in err
    torch.load(last, map_location="cpu", weights_only=False)  # a whole checkpoint


# ------------------------------------------------------------------------------------------------ item 4
class _FullDisk:
    """A file whose writes fail as on a full disk (the OS's ENOSPC), around a real one."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_during_a_checkpoint_write_is_one_error_naming_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    from scoresde.run import user_error_message
    from scoresde.tasks import compose_config, run_task
    from scoresde.train import checkpoint

    fdopen, saves = os.fdopen, []

    def fill_up_after_the_first_save(fd, *args, **kwargs):
        saves.append(fd)
        f = fdopen(fd, *args, **kwargs)
        return f if len(saves) == 1 else _FullDisk(f)

    monkeypatch.setattr(checkpoint.os, "fdopen", fill_up_after_the_first_save)
    cfg = compose_config(*TINY, "trainer.max_steps=6", "logger=csv", output_dir=tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(checkpoint.CheckpointWriteError) as err:
        run_task(cfg)
    assert str(err.value) == (
        f"could not write {last}: no space left on device (the last good checkpoint is {last})"
    )
    monkeypatch.undo()
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2  # kept, whole
    assert not list(last.parent.glob(".*.tmp"))
    # the logger's own save failing next (it does on a full disk) still reports the checkpoint's error
    try:
        try:
            raise err.value
        except checkpoint.CheckpointWriteError:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "logs" / "x.csv"))  # noqa: B904
    except OSError as logger_error:
        assert user_error_message(logger_error, cfg) == str(err.value)
    plain = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "weights_ema.pt"))
    assert user_error_message(plain, cfg) == (
        f"could not write {tmp_path / 'weights_ema.pt'}: no space left on device "
        f"(the last good checkpoint is {last})"
    )


# ------------------------------------------------------------------------------------------------ item 5
@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    from scoresde.tasks import compose_config, run_task

    run = tmp_path_factory.mktemp("digits")
    run_task(compose_config("threads=1", "trainer.max_steps=2", "task.sample=false", "task.likelihood=false",
                            "validation.bpd_examples=0", "validation.num_samples=2",
                            "validation.solver.steps=2", "validation.bound_samples=0",
                            "progress_bar_refresh_rate=0", "logger=none", output_dir=run))
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: np.savez(d / "s.npz", mu=np.zeros(3), sigma=np.eye(3)), r"reference_stats=.*3 features"),
        (lambda d: np.savez(d / "s.npz", mean=np.zeros(3)), r"no FID statistics in it \(keys \['mean'\]\)"),
        (None, r"task\.compare_to: no such file .*nowhere\.json"),
    ],
)
def test_bad_evaluation_inputs_are_found_before_the_first_score_evaluation(
    digits_ckpt, tmp_path, monkeypatch, make, message
):
    from scoresde.tasks import compose_config, evaluate, run_task
    from scoresde.tasks.common import ConfigError

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started before the evaluation's inputs were checked")

    monkeypatch.setattr(evaluate, "generate", no_sampling)
    extra = [f"task.reference_stats={tmp_path / 's.npz'}"] if make else [
        f"task.compare_to={tmp_path / 'nowhere.json'}"]
    if make:
        make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        run_task(compose_config("task=evaluate", "threads=1", f"ckpt_path={digits_ckpt}", "num_samples=4",
                                *extra, output_dir=tmp_path / "out"))


# ------------------------------------------------------------------------------------------------ item 8
def test_a_batch_larger_than_the_training_set_is_an_error_before_training(tmp_path):
    from scoresde.tasks import compose_config, run_task
    from scoresde.tasks.common import ConfigError

    with pytest.raises(ConfigError, match=r"data\.batch_size=512 is larger than the training split \(100 "):
        run_task(compose_config(*TINY, "data.n_train=100", "data.batch_size=512", output_dir=tmp_path))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


# ------------------------------------------------------------------------------------------------ item 9
@pytest.mark.parametrize(
    ("override", "texts"),
    [
        ("sde=vpp", ["unknown option sde=vpp (did you mean sde=vp?); the options of sde: subvp, ve, vp"]),
        ("solver=dpmsolver", ["did you mean solver=dpm_solver?", "ddim, dpm_solver, em, heun, ode, pc"]),
        ("solver.stepz=10", ["unknown key solver.stepz (did you mean solver.steps?); the keys of solver: ",
                             "+solver.stepz="]),
        ("data.root=/tmp/dätä",
         ["cannot read the override data.root=/tmp/dätä", "\"data.root='/tmp/dätä'\""]),
    ],
)
def test_hydras_own_errors_are_one_line_with_the_options(override, texts):
    from scoresde.run import hydra_error_message
    from scoresde.tasks import compose_config

    with pytest.raises(Exception) as err:  # noqa: PT011 - Hydra's own exception types
        compose_config(override)
    message = hydra_error_message(err.value)
    assert message is not None and "\n" not in message
    for text in texts:
        assert text in message


@pytest.mark.slow
def test_the_app_prints_hydras_errors_as_one_error_line_and_exits_1(tmp_path):
    proc = _cli(["solver=dpmsolver", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=60)
    _is_user_error(proc, "error: unknown option solver=dpmsolver (did you mean solver=dpm_solver?)")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ item 7
@pytest.mark.slow
def test_em_and_pc_samples_across_batch_sizes_are_what_docs_app_says(trained_cli):
    """Bit for bit at the same batch size and with a score that treats each row alone (the oracle); across
    batch sizes only up to the rounding of the network's batched matrix products (docs/app.md)."""
    import re

    from scoresde.solvers import EulerMaruyama, PredictorCorrector
    from scoresde.tasks.sample import generate
    from scoresde.train import load_score_model

    model = load_score_model(trained_cli / "checkpoints" / "last.ckpt")
    seeds = list(range(16))
    for make in (lambda: EulerMaruyama(steps=30), lambda: PredictorCorrector(steps=15)):
        full, _ = generate(model, make(), seeds, 16)
        assert torch.equal(generate(model, make(), seeds, 16)[0], full)
        torch.testing.assert_close(generate(model, make(), seeds, 3)[0], full, rtol=0, atol=1e-4)
    # the rounding is the network's: the same 16 rows in 6 products of 3 rows and in one of 16
    x, t = torch.randn(16, *model.data_shape, generator=torch.Generator().manual_seed(0)), torch.rand(16)
    with torch.no_grad():
        whole = model.score_fn(x, t)
        parts = torch.cat([model.score_fn(x[i:i + 3], t[i:i + 3]) for i in range(0, 16, 3)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)
    docs = (Path(__file__).parents[1] / "docs" / "app.md").read_text()
    table = docs[docs.index("| solver | sample `i`"):]
    table = table[: table.index("\n\n")]
    assert not re.search(r"\| `(em|pc)`[^|]*\| yes, bit for bit", table)
    assert "matrix products" in table


# ------------------------------------------------------------------------------------------------ item 10
@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
def test_an_official_checkpoint_preset_samples_on_a_cpu_machine_without_trainer_cpu(tmp_path, caplog):
    from test_model_files import FIXTURES, SMALL

    from scoresde.tasks import compose_config, run_task

    cfg = compose_config("task=sample", "experiment=cifar10_ve_ncsnpp_cont",
                         f"ckpt_path={FIXTURES / 'ncsnpp_ve_small.pth'}", "solver=pc", "solver.steps=2",
                         "num_samples=2", *[o for o in SMALL if o != "trainer=cpu"], output_dir=tmp_path)
    assert cfg.trainer.accelerator == "gpu"
    with caplog.at_level("WARNING"):
        assert run_task(cfg)["sampling"]["num_samples"] == 2
    assert "no CUDA device is available: task=sample runs on the CPU" in caplog.text


def test_fast_dev_run_runs_train_sample_and_likelihood_of_the_main_job_in_seconds(tmp_path):
    from scoresde.tasks import compose_config, run_task

    t0 = time.perf_counter()
    metrics = run_task(compose_config("trainer.fast_dev_run=true", "threads=1", "progress_bar_refresh_rate=0",
                                      "logger=none", output_dir=tmp_path))
    assert metrics["global_step"] == 1 and metrics["sampling"]["num_samples"] == 4
    assert metrics["sampling"]["nfe_per_batch"] <= 12 and metrics["likelihood"]["num_examples"] == 2
    assert (tmp_path / "samples.png").is_file() and time.perf_counter() - t0 < 45  # was 77 s (probe)


@pytest.mark.slow
def test_a_log_gets_one_line_per_refresh_and_refresh_rate_0_silences_every_bar(trained_cli, tmp_path, capfd):
    """Under pytest stderr is not a terminal, as in a log file."""
    from scoresde.tasks import compose_config, run_task

    run_task(compose_config(*TINY, "progress_bar_refresh_rate=2", "trainer.max_steps=6", "num_samples=8",
                            "sample_batch_size=4", "task.likelihood=false", output_dir=tmp_path / "a"))
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("training:")]
    assert [re.search(r"\| (\d+)/6 ", line).group(1) for line in lines] == ["2", "4", "6"]
    assert sum(line.startswith("sampling:") for line in err.splitlines()) == 2
    # 0: no bar at all, in a task on a trained model too (sampling, the solver's steps, likelihood)
    ckpt = trained_cli / "checkpoints" / "last.ckpt"
    for task in ("sample", "likelihood"):
        run_task(compose_config(*TINY, f"task={task}", f"ckpt_path={ckpt}", "progress_bar_refresh_rate=0",
                                "num_samples=8", "sample_batch_size=2", "likelihood.batch_size=1",
                                output_dir=tmp_path / task))
    err = capfd.readouterr().err
    assert "%|" not in err and "it/s" not in err, err[-2000:]


# ------------------------------------------------------------------------------------ issue 26, item 4
def test_ckpt_path_has_one_parser_for_its_special_values(tmp_path):
    from scoresde.train.checkpoint import CkptPath, parse_ckpt_path, resolve_ckpt_path

    for unset in (None, "", "null", "None"):
        assert parse_ckpt_path(unset) == CkptPath("none")
    assert parse_ckpt_path("last") == CkptPath("last") and parse_ckpt_path("auto") == CkptPath("auto")
    assert parse_ckpt_path("~/x.ckpt") == CkptPath("file", Path.home() / "x.ckpt")
    ckpt_dir = tmp_path / "checkpoints"
    assert resolve_ckpt_path("auto", ckpt_dir) is None and resolve_ckpt_path("null", ckpt_dir) is None
    ckpt_dir.mkdir()
    (ckpt_dir / "last.ckpt").write_bytes(b"")
    last = str(ckpt_dir / "last.ckpt")
    assert resolve_ckpt_path("auto", ckpt_dir) == resolve_ckpt_path("last", ckpt_dir) == last
    # the app's modules read ckpt_path only through it
    root = Path(__file__).parents[1] / "scoresde"
    for module in (root / "tasks").glob("*.py"):
        text = module.read_text()
        assert not re.search(r"str\(cfg\.ckpt_path\)\s*(==|in)|Path\(str\(cfg\.ckpt_path\)\)", text), module


# ------------------------------------------------------------------------------------ the probe's cases
def test_a_second_training_run_in_a_directory_in_use_is_refused(tmp_path):
    from scoresde.tasks import compose_config, run_task
    from scoresde.tasks.common import ConfigError
    from scoresde.tasks.rundir import lock_run_dir, unlock_run_dir

    run = tmp_path / "run"
    run.mkdir()
    other = lock_run_dir(run)  # another run, training in it now
    try:
        before = _files(run)
        with pytest.raises(ConfigError, match=r"is in use by another run that is training now"):
            run_task(compose_config(*TINY, "logger=none", output_dir=run))
        assert _files(run) == before
    finally:
        unlock_run_dir(other)
    metrics = run_task(compose_config(*TINY, "logger=none", output_dir=run))  # free again: it trains
    assert metrics["global_step"] == 2
    run_task(compose_config(*TINY, "logger=none", "ckpt_path=last", "trainer.max_steps=3", output_dir=run))
