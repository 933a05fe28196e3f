"""The command-line app: ``python -m scoresde.run [task=...] [group=option ...] [key=value ...]``.

A thin Hydra entry point; the configs are the package ``scoresde.conf`` (``conf/`` in the source tree) and
the work is done by :mod:`scoresde.tasks`. Examples::

    python -m scoresde.run                                  # the main job: train on digits, sample, bits/dim
    python -m scoresde.run task=sample ckpt_path=outputs/train/.../last.ckpt solver=ode num_samples=64
    python -m scoresde.run task=likelihood ckpt_path=.../last.ckpt
    python -m scoresde.run -m experiment=toy2d sde=vp,subvp,ve solver=em,pc,ode hydra/launcher=joblib
    python -m scoresde.run hydra.run.dir=<a run dir> ckpt_path=last       # resume that run
    python -m scoresde.run --cfg job                        # print the composed config

Errors the user can fix (a bad config value, a missing data/weights/checkpoint file, a corrupt checkpoint,
a diverged run, a run directory that cannot be created) end a single run with ``error: <what and how to fix
it>`` on stderr and exit status 1, no traceback (``HYDRA_FULL_ERROR=1`` shows it); in a multirun sweep they
are raised so the launcher reports them. Ctrl-C and SIGTERM end with exit status 1 and say how to resume.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

CONFIG_MODULE = "scoresde.conf"


class RunDirCheck(Callback):
    """Hydra callback (``hydra.callbacks`` in ``config.yaml``): before Hydra creates the run directory,
    check that it can be created and written; otherwise ``error: ...`` and exit status 1 (Hydra itself
    would end in a traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(path: str, key: str) -> None:
        import tempfile
        from pathlib import Path

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as err:
            print(
                f"error: cannot create or write the run directory {path} ({err.strerror or err}); "
                f"choose another one with {key}=<a writable directory>",
                file=sys.stderr,
            )
            sys.exit(1)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message alone tells the user what is wrong and what to do."""
    from scoresde.data.errors import DataFormatError, DataNotFoundError
    from scoresde.evaluation.errors import WeightsFormatError, WeightsNotFoundError
    from scoresde.losses import NonFiniteLossError
    from scoresde.nets.checkpoint import CheckpointMismatchError
    from scoresde.solvers.base import SamplingError
    from scoresde.tasks.common import ConfigError
    from scoresde.train.checkpoint import CheckpointError

    return (ConfigError, CheckpointError, CheckpointMismatchError, DataNotFoundError, DataFormatError,
            WeightsNotFoundError, WeightsFormatError, NonFiniteLossError, SamplingError)


def user_error_message(err: BaseException, cfg: DictConfig) -> str | None:
    """The message of ``err`` if it is a user error, or was raised while handling one (on a full disk the
    logger's final save fails too, after the checkpoint write that stopped training); for a full disk
    (``ENOSPC``, ``EDQUOT``) the file and the last good checkpoint; None for anything else."""
    import errno

    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, user_errors()):
            return str(cause)
        seen.add(id(cause))
        cause = cause.__context__
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        from scoresde.tasks.common import output_dir

        last = output_dir(cfg) / "checkpoints" / "last.ckpt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
        return f"could not write {err.filename or 'a file'}: {(err.strerror or str(err)).lower()} ({kept})"
    return None


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> dict | float:
    """Run the configured task (see :mod:`scoresde.tasks`)."""
    import warnings

    from scoresde.tasks import run_task
    from scoresde.tasks.common import Terminated, terminate_like_ctrl_c

    terminate_like_ctrl_c()  # SIGTERM ends the run like Ctrl-C (not with Lightning's silent status 0)

    # pytorch_lightning's own use of a torch API that torch >= 2.9 deprecates: not the user's to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    from scoresde.tasks.sweep import optimized_value

    try:
        return optimized_value(cfg, run_task(cfg))  # a number for a sweeper when optimized_metric is set
    except Exception as err:
        message = user_error_message(err, cfg)
        if message is None or not _single_run() or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        if not _single_run():
            raise
        from scoresde.tasks.common import output_dir

        last = output_dir(cfg) / "checkpoints" / "last.ckpt"
        hint = (
            f"; the last checkpoint is {last}: resume training with hydra.run.dir={last.parent.parent} "
            f"ckpt_path=last, or sample from it with task=sample ckpt_path={last}"
            if last.is_file()
            else ""
        )
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"
        print(f"error: {how}{hint}", file=sys.stderr)
        sys.exit(1)

if __name__ == "__main__":
    main()
