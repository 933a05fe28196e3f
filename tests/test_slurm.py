"""The cluster path: ``ckpt_path=auto``, the global batch under DDP, the SLURM launcher's config, and a REAL
single-node SLURM cluster (Debian's slurmctld, slurmd and munge, started by the ``slurm_cluster`` fixture
on this machine) running the app through Hydra's submitit launcher: a DDP training job with two tasks, a
two-job sweep, ``scontrol requeue`` of a running job that resumes from ``last.ckpt``, and DDP sampling
under SLURM equal to one process.

The cluster tests need the slurm binaries (``apt-get install slurmctld slurmd munge``; .ci/run installs
them), root (slurmd launches the job steps) and ``pip install -e '.[slurm]'``; they are skipped with the
reason otherwise, except under ``SCORESDE_REQUIRE_SLURM=1`` (set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_app_run import TOY_BASE

from scoresde.data.base import per_process_batch_size
from scoresde.tasks import compose_config
from scoresde.tasks.common import ConfigError, validate_config
from scoresde.train import CheckpointError, resolve_ckpt_path

pytestmark = pytest.mark.usefixtures("one_thread")

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


# --------------------------------------------------------------------------------------- ckpt_path=auto
def test_ckpt_path_auto_resumes_when_last_exists_else_starts_fresh(tmp_path):
    assert resolve_ckpt_path("auto", tmp_path) is None
    with pytest.raises(CheckpointError, match="ckpt_path=last: there is no"):
        resolve_ckpt_path("last", tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "last.ckpt")
    assert resolve_ckpt_path(None, tmp_path) is None


def test_ckpt_path_follows_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("SCORESDE_CKPT_PATH", raising=False)
    assert compose_config().ckpt_path is None
    monkeypatch.setenv("SCORESDE_CKPT_PATH", "auto")  # what hydra/launcher=slurm's hydra.job.env_set does
    assert compose_config().ckpt_path == "auto"
    assert compose_config("ckpt_path=last").ckpt_path == "last"  # the command line wins


def test_sampling_needs_a_checkpoint_file_not_auto(monkeypatch):
    from scoresde.tasks.launch import checkpoint_model

    monkeypatch.setenv("SCORESDE_CKPT_PATH", "auto")  # a task=sample job through hydra/launcher=slurm
    with pytest.raises(ConfigError, match="task=sample needs a trained model: ckpt_path=/path/to/last.ckpt"):
        checkpoint_model(compose_config("task=sample"))


# ------------------------------------------------------------------------------------------ global batch
def test_per_process_batch_is_the_global_batch_divided():
    assert per_process_batch_size(128, 1) == 128 and per_process_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match=r"data.batch_size=128 is the global batch.*multiple of 3, e.g. 126"):
        per_process_batch_size(128, 3)


def test_ddp_config_with_an_indivisible_batch_is_an_error():
    validate_config(compose_config("trainer=ddp", "trainer.devices=4"))  # 128 / 4
    with pytest.raises(ConfigError, match=r"data.batch_size=128 is the global batch.*multiple of 3"):
        validate_config(compose_config("trainer=ddp", "trainer.devices=3"))
    with pytest.raises(ConfigError, match=r"data.eval_batch_size=10 is the global batch"):
        validate_config(compose_config("trainer=ddp", "trainer.devices=4", "data.eval_batch_size=10"))
    validate_config(compose_config("trainer=cpu", "data.batch_size=7"))  # one process: any batch


def test_data_loaders_draw_the_per_process_batch_under_a_ddp_trainer():
    import pytorch_lightning as pl

    dm = compose_and_build_toy("data.batch_size=64", "data.eval_batch_size=32")
    assert next(iter(dm.train_dataloader())).shape[0] == 64
    dm.trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)  # not started
    assert dm.world_size == 2
    assert next(iter(dm.train_dataloader())).shape[0] == 32
    assert next(iter(dm.val_dataloader())).shape[0] == 16
    dm.batch_size = 63
    with pytest.raises(ValueError, match="data.batch_size=63 is the global batch"):
        dm.train_dataloader()


def compose_and_build_toy(*overrides: str):
    from scoresde.tasks.common import datamodule_from_config

    return datamodule_from_config(compose_config(*TOY_BASE, *overrides))


# ------------------------------------------------------------------------------------- launcher config
def test_slurm_launcher_resources_follow_the_trainer():
    from hydra import compose, initialize_config_module

    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_module("scoresde.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["nodes"] == 2 and launcher["tasks_per_node"] == 4 and launcher["gpus_per_node"] == 4
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.job.env_set.SCORESDE_CKPT_PATH == "auto"


def test_lightning_slurm_auto_requeue_is_off_under_slurm(tmp_path, monkeypatch):
    """submitit owns the requeue; Lightning's SLURM environment is used for the ranks only."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from scoresde.tasks.trainer import build_trainer

    env = dict(SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1", SLURM_JOB_NAME="scoresde", SLURM_JOB_ID="7",
               SLURM_NODELIST="localhost", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer, _, _ = build_trainer(compose_config(*TOY_BASE), tmp_path, tmp_path / "checkpoints")
    cluster = trainer._accelerator_connector.cluster_environment
    assert isinstance(cluster, SLURMEnvironment) and cluster.auto_requeue is False


def test_local_rank_picks_the_gpu(monkeypatch):
    """A process's GPU follows its rank on its node: LOCAL_RANK (Lightning's or torchrun's processes),
    else SLURM_LOCALID (srun's tasks), else the global rank."""
    from scoresde.train.distributed import local_rank

    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert local_rank() == 0
    monkeypatch.setenv("SLURM_LOCALID", "3")  # e.g. global rank 7 = task 3 of the second 4-GPU node
    assert local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_rank() == 1


# ------------------------------------------------------------------------------- a real SLURM cluster
def _missing() -> str | None:
    absent = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None
              and not Path("/usr/sbin", name).is_file()]
    if absent:
        return (f"SLURM is not installed (missing {', '.join(absent)}): "
                "apt-get install slurmctld slurmd munge slurm-client")
    if os.geteuid() != 0:
        return "the single-node SLURM cluster needs root (slurmd launches the job steps)"
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return "hydra-submitit-launcher is not installed: pip install -e '.[slurm]'"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
# a single-node cluster for the tests (tests/test_slurm.py): localhost, 2 CPUs, no cgroups, no accounting
ClusterName=scoresde-test
SlurmctldHost=localhost
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=600
NodeName=localhost NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged + slurmctld + slurmd in the foreground, for a ``slurm.conf`` under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.env.pop("HYDRA_FULL_ERROR", None)

    def start(self) -> None:
        root = self.root
        for sub in ("munge", "state", "spool", "log"):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(SLURM_CONF.format(
            user=getpass.getuser(), root=root, host=socket.gethostname(), ctld_port=_free_port(),
            d_port=_free_port()))
        m = root / "munge"
        self._spawn([_exe("munged"), "--foreground", "--force", f"--key-file={key}",
                     f"--socket={m}/munge.socket", f"--pid-file={m}/munged.pid",
                     f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
        self._wait(lambda: (m / "munge.socket").exists(), "munged")
        self._spawn([_exe("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld")
        self._spawn([_exe("slurmd"), "-D", "-f", str(self.conf), "-N", "localhost"])
        idle = lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle"  # noqa: E731
        self._wait(idle, "slurmd")

    def _spawn(self, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].args[0]} exited with {dead[0].returncode}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not come up within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if f.is_file():
                out.append(f"== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([_exe(cmd[0]), *cmd[1:]], env=self.env, capture_output=True, text=True,
                              timeout=30)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr}")
        return proc

    def jobs(self) -> dict[str, str]:
        """``{job id: state}`` of the jobs SLURM knows (array tasks as ``<id>_<index>``)."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def stop(self) -> None:
        self.run("scancel", "--user", getpass.getuser(), check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            s in ("RUNNING", "COMPLETING") for s in self.jobs().values()
        ):
            time.sleep(0.3)
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _missing()
    if reason is not None:
        if os.environ.get("SCORESDE_REQUIRE_SLURM") == "1":
            pytest.fail(f"SCORESDE_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


#: the app on the test cluster: CPU nodes (no GPUs), 1 CPU per task, no memory request, 10-minute limit
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=10",
]
TOY = [*TOY_BASE, "trainer.val_check_interval=100000", "validation.bpd_examples=0", "solver.steps=10",
       "num_samples=9", "likelihood.num_examples=4"]


def _multirun(cluster: SlurmCluster, args: list[str], cwd: Path, timeout: float = 150, **popen):
    cmd = [sys.executable, "-m", "scoresde.run", "-m", *LAUNCHER, *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=cluster.env, **popen)
    proc = subprocess.run(cmd, cwd=cwd, env=cluster.env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:] + _job_logs(cwd)
    return proc


def _job_logs(where: Path) -> str:
    logs = sorted(where.rglob("*_log.*"))
    return "".join(f"\n== {f}\n{f.read_text(errors='replace')[-3000:]}" for f in logs)


@pytest.fixture(scope="module")
def ddp_job(slurm_cluster, tmp_path_factory):
    """One SLURM job with two tasks: DDP training on 2 CPU processes (gloo), global batch 64."""
    where = tmp_path_factory.mktemp("ddp_job")
    _multirun(
        slurm_cluster,
        [*TOY, "trainer=ddp", "trainer.devices=2", "trainer.max_steps=16", "checkpoint.every_n_steps=8",
         "trainer.log_every_n_steps=1", "logger=csv", f"hydra.sweep.dir={where}/sweep"],
        where,
    )
    return where / "sweep" / "0"


@pytest.mark.slow
def test_ddp_training_runs_as_one_slurm_job_with_two_tasks(ddp_job):
    metrics = json.loads((ddp_job / "metrics.json").read_text())
    assert metrics["global_step"] == 16 and metrics["resumed_from"] is None
    ckpt = torch.load(ddp_job / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 16
    logs = sorted((ddp_job.parent / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # tasks 0 and 1 of one job
    text = "".join(f.read_text() for f in logs)
    assert "process 1 of 2" in text and "process 0 of 2" in text  # the sharded sampling ran on both ranks
    # the global batch: 512 examples / 64 = 8 steps per epoch (per-process batches of 32 on 2 ranks)
    rows = [line.split(",") for line in (ddp_job / "logs" / "metrics.csv").read_text().splitlines()]
    epoch = rows[0].index("epoch")
    last = max(int(float(r[epoch])) for r in rows[1:] if r[epoch])
    assert last == 1
    assert metrics["sampling"]["num_samples"] == 9 and (ddp_job / "samples.png").is_file()
    assert not list(ddp_job.glob("hpc_ckpt*"))


@pytest.mark.slow
def test_ddp_sampling_under_slurm_equals_one_process(slurm_cluster, ddp_job, tmp_path):
    ckpt = ddp_job / "checkpoints" / "last.ckpt"
    _multirun(
        slurm_cluster,
        [*TOY, "task=sample", "trainer=ddp", "trainer.devices=2", f"ckpt_path={ckpt}", "num_samples=7",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        tmp_path,
    )
    under_slurm = torch.load(tmp_path / "sweep" / "0" / "samples.pt", weights_only=False)
    assert under_slurm["seeds"] == list(range(7))
    logs = "".join(f.read_text() for f in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert "process 1 of 2 started" in logs  # two SLURM tasks joined one process group
    # one process, here, with the same checkpoint, solver and seeds
    from scoresde.tasks.common import solver_from_config
    from scoresde.tasks.sample import generate
    from scoresde.train import load_score_model

    cfg = compose_config(*TOY)
    single, _ = generate(load_score_model(ckpt), solver_from_config(cfg), list(range(7)), batch_size=4)
    torch.testing.assert_close(under_slurm["samples"], single, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_job_sweep_through_the_slurm_launcher(slurm_cluster, tmp_path):
    _multirun(
        slurm_cluster,
        [*TOY, "seed=0,1", "trainer.max_steps=6", "checkpoint.every_n_steps=3", "task.likelihood=false",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        tmp_path,
    )
    runs = sorted((tmp_path / "sweep").glob("[0-9]"))
    assert [r.name for r in runs] == ["0", "1"]
    samples = []
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 6
        samples.append(torch.load(run / "samples.pt", weights_only=False))
    assert samples[0]["seeds"][0] == 0 and samples[1]["seeds"][0] == 1_000_000  # seed=0 and seed=1
    jobs = {p.name for p in (tmp_path / "sweep" / ".submitit").glob("*_*") if p.is_dir()}
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1  # one SLURM job array, two tasks


def _checkpoint_beyond(last: Path, step: int, proc: subprocess.Popen, where: Path, timeout: float = 90
                       ) -> int:
    """Wait until ``last`` holds a step >= ``step`` (while the sweep is still running); return that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file():
            saved = torch.load(last, weights_only=False)["global_step"]  # atomic writes: never partial
            if saved >= step:
                return saved
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of step >= {step} while the job ran" + _job_logs(where))


def _start_now(cluster: SlurmCluster, job: str) -> None:
    """SLURM holds a requeued job back for about two minutes (its begin time): let it start now."""
    deadline = time.monotonic() + 60
    while cluster.jobs().get(job) != "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)
    # an update that lands while the requeue is still completing does not lift the hold: repeat it
    # until the job has left the queue's PENDING state
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now", check=False)
        time.sleep(2.0)
        if cluster.jobs().get(job) != "PENDING":
            return


@pytest.mark.slow
def test_requeued_job_resumes_from_last_ckpt(slurm_cluster, tmp_path):
    """A training job requeued twice: by ``scontrol requeue`` (an admin, or preemption with
    PreemptMode=REQUEUE) and by the signal SLURM sends before the time limit (SIGUSR2, which submitit
    handles: it requeues the job itself). Each time it comes back with ckpt_path=auto, resumes from
    last.ckpt and it ends at max_steps with the step count, the optimizer, the LR schedule and the EMA
    consistent."""
    run = tmp_path / "sweep" / "0"
    last = run / "checkpoints" / "last.ckpt"
    max_steps, every = 1000, 20
    proc = _multirun(
        slurm_cluster,
        [*TOY, f"trainer.max_steps={max_steps}", f"checkpoint.every_n_steps={every}", "task.likelihood=false",
         "num_samples=3", f"hydra.sweep.dir={tmp_path}/sweep"],
        tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        first = _checkpoint_beyond(last, 2 * every, proc, tmp_path)
        (job,) = [j for j, state in slurm_cluster.jobs().items() if state == "RUNNING"]
        slurm_cluster.run("scontrol", "requeue", job)
        _start_now(slurm_cluster, job)
        # the requeued run trains on from `first` (the killed one wrote nothing after the signal)
        second = _checkpoint_beyond(last, first + 2 * every, proc, tmp_path)
        assert second < max_steps - 8 * every, "training ran too fast to interrupt it a second time"
        slurm_cluster.run("scancel", "--signal=USR2", job)  # what SLURM sends signal_delay_s before the limit
        _start_now(slurm_cluster, job)
        out, _ = proc.communicate(timeout=150)
        assert proc.returncode == 0, out[-3000:] + _job_logs(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Restarts=2" in slurm_cluster.run("scontrol", "show", "job", job).stdout
    log = "".join(f.read_text() for f in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log  # submitit requeued it
    assert log.count("Restored all states from the checkpoint") == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(last)
    start = metrics["start_step"]
    assert second <= start < max_steps and start % every == 0
    assert metrics["global_step"] == max_steps and metrics["ema_updates"] == max_steps
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == max_steps
    assert int(final["averaging_state"]["n_averaged"]) == max_steps + 1
    assert float(final["optimizer_states"][0]["state"][0]["step"]) == max_steps
    assert final["lr_schedulers"][0]["last_epoch"] == max_steps
    assert not list(run.glob("hpc_ckpt*"))  # Lightning's own requeue checkpoint: not used
