"""A run directory belongs to one run.

* Training starts only in a directory that holds no other run's results; a directory with a checkpoint is
  continued with ``ckpt_path=last`` (or training goes elsewhere), never overwritten.
* A task on a trained model (sample, likelihood, evaluate) pointed at a directory that holds another run's
  results writes into a fresh subfolder (``<dir>/sample``, ``<dir>/sample-2``, ...).
* The directories a run writes are checked for writing before any long work starts.
* Temporary files left by a save that was killed (``kill -9``) are removed when the run starts again.
* One training run at a time per directory (a lock file): a second one started at once is refused.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .common import ConfigError

__all__ = [
    "CKPT_DIR",
    "RESULT_FILES",
    "check_writable",
    "claim_for_training",
    "is_secondary_process",
    "lock_run_dir",
    "remove_stale_temporaries",
    "results_in",
    "task_output_dir",
    "unlock_run_dir",
]

log = logging.getLogger(__name__)

#: the checkpoint folder of a training run directory
CKPT_DIR = "checkpoints"
#: files and folders that only a run's own results put into a run directory (Hydra's ``.hydra*`` and
#: log files are not results)
RESULT_FILES = (
    CKPT_DIR,
    "metrics.json",
    "weights_ema.pt",
    "samples.png",
    "samples.pt",
    "samples.npz",
    "likelihood.pt",
    "logs",
)


def is_secondary_process() -> bool:
    """True in a process started by a launcher for another rank (DDP re-runs the command; SLURM starts one
    task per rank, ``SLURM_PROCID``): such a process neither claims, locks nor creates the run directory;
    rank 0 does."""
    for var in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"):
        if int(os.environ.get(var, "0") or 0) > 0:
            return True
    return False


def results_in(run_dir: Path) -> list[str]:
    """The results of some run that ``run_dir`` already holds (names from :data:`RESULT_FILES`; an
    empty folder is no result)."""
    return [name for name in RESULT_FILES if _non_empty(run_dir / name)]


def _non_empty(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def check_writable(path: Path, what: str) -> None:
    """Create ``path`` (a directory) if needed and write a test file into it; a clear
    :class:`ConfigError` (what and how to fix it) when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(
            f"cannot write the {what} {path} ({err.strerror or err}); choose a writable directory, e.g. "
            "hydra.run.dir=<a writable path>, or fix the permissions"
        ) from None


def claim_for_training(run_dir: Path, resume: str | None) -> None:
    """Refuse to train into ``run_dir`` when it holds another run's results (a checkpoint that this run
    does not continue, or a task's results), naming what is there and the ways forward."""
    last = run_dir / CKPT_DIR / "last.ckpt"
    own = last.resolve()
    if last.is_file():
        if resume is None:
            raise ConfigError(
                f"the run directory {run_dir} already holds a trained model ({last}); training again here "
                "would overwrite it. To continue that run: add ckpt_path=last "
                f"(with hydra.run.dir={run_dir}); "
                "to start a new run: use another directory (drop hydra.run.dir, or hydra.run.dir=<new dir>)"
            )
        if Path(resume).resolve() != own:
            raise ConfigError(
                f"the run directory {run_dir} holds another run's checkpoint ({last}); resuming {resume} "
                f"here would overwrite it. Resume into a new directory (hydra.run.dir=<new dir> "
                f"ckpt_path={resume}) or continue this directory's run with ckpt_path=last"
            )
        return
    found = [name for name in results_in(run_dir) if name != "logs"]
    if found:
        raise ConfigError(
            f"the run directory {run_dir} already holds the results of another run ({', '.join(found)}); "
            "train into a new directory (drop hydra.run.dir, or hydra.run.dir=<new dir>)"
        )


#: the lock file a training run holds in its run directory while it runs
LOCK_FILE = ".scoresde.lock"


def lock_run_dir(run_dir: Path) -> int:
    """Take the run directory for this process (an exclusive ``flock`` on ``<run_dir>/.scoresde.lock``,
    which the OS releases when the process ends, ``kill -9`` included); a :class:`ConfigError` if another
    run holds it (two runs started at once in one directory). Returns the lock's file descriptor for
    :func:`unlock_run_dir`. The file is never written, so a refused run changes nothing."""
    import fcntl

    fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run that is training now; wait for it to end "
            "(then continue it with ckpt_path=last) or train in another directory (hydra.run.dir=<new dir>)"
        ) from None
    return fd


def unlock_run_dir(fd: int | None) -> None:
    """Give the run directory back (:func:`lock_run_dir`)."""
    if fd is not None:
        os.close(fd)


def remove_stale_temporaries(ckpt_dir: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files of atomic saves that were killed before their rename (they are
    never complete checkpoints); returns the deleted paths."""
    removed = []
    if ckpt_dir.is_dir():
        for tmp in sorted(ckpt_dir.glob(".*.tmp")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info(
            "removed %d unfinished checkpoint file(s) of an interrupted save in %s", len(removed), ckpt_dir
        )
    return removed


def task_output_dir(run_dir: Path, task: str) -> Path:
    """Where a task on a trained model writes: ``run_dir`` itself if it holds no run's results, else the
    first fresh subfolder ``<run_dir>/<task>``, ``<run_dir>/<task>-2``, ... (so nothing is overwritten)."""
    if not results_in(run_dir):
        return run_dir
    k = 1
    while True:
        sub = run_dir / (task if k == 1 else f"{task}-{k}")
        if not sub.exists() or not results_in(sub):
            log.warning(
                "%s holds the results of another run (%s); task=%s writes into %s",
                run_dir,
                ", ".join(results_in(run_dir)),
                task,
                sub,
            )
            return sub
        k += 1
