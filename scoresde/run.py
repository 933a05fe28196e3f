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

        if full_error():
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


def user_error_message(err: BaseException, cfg: DictConfig | None = None) -> str | None:
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

        last = None if cfg is None else output_dir(cfg) / "checkpoints" / "last.ckpt"
        kept = (f"the last good checkpoint is {last}" if last is not None and last.is_file()
                else "no checkpoint was written")
        return f"could not write {err.filename or 'a file'}: {(err.strerror or str(err)).lower()} ({kept})"
    return None


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


#: set while :func:`main` has switched on HYDRA_FULL_ERROR to report Hydra's own errors itself
_WRAPPED = "SCORESDE_REPORTS_HYDRA_ERRORS"


def full_error() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and _WRAPPED not in os.environ


def main() -> None:
    """``python -m scoresde.run``: the Hydra app (:func:`hydra_main`), whose own errors (an unknown option
    or key, an override it cannot parse) end with one ``error:`` line naming the options and exit status 1
    instead of Hydra's multi-line report."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    os.environ.update({"HYDRA_FULL_ERROR": "1", _WRAPPED: "1"})  # Hydra raises its errors: reported below
    try:
        hydra_main()
    except Exception as err:
        # Hydra's own error, or a job's user error re-raised by a multirun's launcher (joblib's workers)
        message = hydra_error_message(err) or user_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        _unwrap()


def _unwrap() -> None:
    """Give the job (and the processes it starts) the user's environment back."""
    if os.environ.pop(_WRAPPED, None):
        os.environ.pop("HYDRA_FULL_ERROR", None)


def hydra_error_message(err: BaseException) -> str | None:
    """One line for an error of Hydra's composition (None for any other error): the options of a group,
    the keys of a block, or how to quote a value Hydra's override grammar cannot read."""
    import difflib

    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    if not isinstance(err, HydraException):
        return None
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(name, err.options, n=1, cutoff=0.5)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"unknown option {group}={name}{hint}; the options of {group}: {', '.join(err.options)}"
    if isinstance(err, OverrideParseException):
        text = str(err).splitlines()[0]
        override = text.split(": ", 1)[-1]
        key, _, value = override.partition("=")
        return (f"cannot read the override {override}: quote a value with spaces, non-ASCII letters or "
                f"special characters, e.g. \"{key}='{value}'\"")
    cause = err.__cause__
    parent = getattr(cause, "parent_node", None)
    if parent is not None and getattr(cause, "full_key", None):
        full_key = str(cause.full_key)
        block, _, key = full_key.rpartition(".")
        keys = [str(k) for k in parent.keys()]
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f" (did you mean {block + '.' if block else ''}{close[0]}?)" if close else ""
        where = f"the keys of {block}" if block else "the top-level keys"
        return (f"unknown key {full_key}{hint}; {where}: {', '.join(keys)} "
                f"(a new key is added with +{full_key}=...)")
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def hydra_main(cfg: DictConfig) -> dict | float:
    """Run the configured task (see :mod:`scoresde.tasks`)."""
    import warnings

    _unwrap()  # the config is composed: from here on errors are the job's, reported as the user asked

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
        if message is None or not _single_run() or full_error():
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
