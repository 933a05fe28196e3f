"""Checkpoints: atomic writes, ``last.ckpt`` every N steps, resolving ``ckpt_path=last|auto``, loading with
clear errors.

A checkpoint is Lightning's: ``state_dict`` holds the EMA (averaged) weights -- the inference weights --
``current_model_state`` the raw training weights, ``averaging_state`` the EMA's update count, plus the
optimizer, LR scheduler, loop and callback states needed to resume at the same step, and
``hyper_parameters`` to rebuild the model without any config.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "CkptPath",
    "CheckpointWriteError",
    "LastCheckpoint",
    "check_compatible",
    "check_same_config",
    "config_differences",
    "load_checkpoint",
    "load_score_model",
    "parse_ckpt_path",
    "resolve_ckpt_path",
]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable (corrupt or truncated) or does not match the model."""


#: signals whose Python handlers may raise (Ctrl-C; SLURM's SIGTERM; submitit's requeue on SIGUSR1/SIGUSR2)
_DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                          if hasattr(signal, name))


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back the Python signal handlers of :data:`_DEFERRED_SIGNALS` inside the block and run them, in
    the order the signals came, when it ends.

    A handler that raises inside ``torch.save`` -- submitit's requeue handler calls ``sys.exit``, Ctrl-C
    raises ``KeyboardInterrupt`` -- interrupts torch's writer, which reports it as a ``RuntimeError``
    ("unexpected pos"): the job fails instead of exiting for its requeue. Deferred, the save completes and the
    handler then runs as it would have. Handlers can only be swapped in the main thread; elsewhere (and for
    signals without a Python handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    saved = {}
    for sig in _DEFERRED_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum, frame in pending:
            saved[signum](signum, frame)


class CheckpointWriteError(CheckpointError):
    """A checkpoint (or weights) file could not be written (a full disk, a quota, lost permissions); the
    previous file of that name is left as it was."""


class _WriteErrors:
    """The file object given to ``torch.save``, keeping the ``OSError`` of a failed write: torch reports
    it as a ``RuntimeError`` ("unexpected pos ...") without the cause."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def write_error(path: Path, err: OSError) -> CheckpointWriteError:
    """``could not write <file>: no space left on device (the last good checkpoint is <file>)``."""
    reason = (err.strerror or str(err)).lower()
    if path.suffix == ".ckpt":
        kept = f"the last good checkpoint is {path}" if path.is_file() else "no checkpoint was written before"
    else:
        kept = f"{path} is left as it was" if path.is_file() else f"{path} was not written"
    return CheckpointWriteError(f"could not write {path}: {reason} ({kept})")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``: a reader (or
    a crash at any moment) sees the old file or the new one, never a partial one. A signal arriving during
    the save is handled after it (:func:`signals_deferred`). A failed write (a full disk) is a
    :class:`CheckpointWriteError` naming the file and the reason; the old file is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    writer = None
    try:
        with signals_deferred():
            with os.fdopen(fd, "wb") as f:
                writer = _WriteErrors(f)
                torch.save(obj, writer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else getattr(writer, "error", None)
        if isinstance(cause, OSError) and isinstance(err, OSError | RuntimeError):
            raise write_error(path, cause) from err
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose saves are atomic (see :func:`atomic_torch_save`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps ``last.ckpt`` (every ``every_n_train_steps`` steps and when training
    ends) and nothing else by default; it never saves on an exception (``save_on_exception=False``), so a
    diverged run leaves the last good checkpoint untouched."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int, save_top_k: int = 0, **kwargs: Any):
        if int(every_n_train_steps) < 1:
            raise ValueError(f"checkpoint every_n_steps must be >= 1, got {every_n_train_steps}")
        super().__init__(
            dirpath=str(dirpath),
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(every_n_train_steps),
            save_last=True,
            save_top_k=save_top_k,
            save_on_exception=False,
            enable_version_counter=False,
            **kwargs,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Also save when training ends between two checkpoint steps (so last.ckpt is the final step)."""
        if trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


@dataclasses.dataclass(frozen=True)
class CkptPath:
    """The meaning of a ``ckpt_path`` setting (:func:`parse_ckpt_path`): ``kind`` is ``"none"`` (not set),
    ``"last"`` (the run directory's ``checkpoints/last.ckpt``, which must exist), ``"auto"`` (that file
    if it exists, else a fresh start) or ``"file"`` (``file``, a path)."""

    kind: str
    file: Path | None = None


def parse_ckpt_path(value: Any) -> CkptPath:
    """The one reading of ``ckpt_path``: unset (``None``, ``""``, ``"null"``, ``"None"``), the words ``last``
    and ``auto``, or a file path (``~`` expanded)."""
    text = "" if value is None else str(value).strip()
    if text in ("", "null", "None"):
        return CkptPath("none")
    if text in ("last", "auto"):
        return CkptPath(text)
    return CkptPath("file", Path(text).expanduser())


def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: str | Path) -> str | None:
    """The checkpoint a training run resumes from (:func:`parse_ckpt_path`): unset -> ``None``; ``last`` ->
    ``<ckpt_dir>/last.ckpt`` (must exist); ``auto`` -> ``<ckpt_dir>/last.ckpt`` if it exists, else ``None``
    (a fresh start: what a requeued or resubmitted cluster job needs); a path -> that path (must exist)."""
    spec = parse_ckpt_path(ckpt_path)
    if spec.kind == "none":
        return None
    if spec.kind == "auto":
        path = Path(ckpt_dir) / "last.ckpt"
        return str(path) if path.is_file() else None
    if spec.kind == "last":
        path = Path(ckpt_dir) / "last.ckpt"
        if not path.is_file():
            raise CheckpointError(
                f"ckpt_path=last: there is no {path}. To resume a run, start it again in its own directory "
                "(hydra.run.dir=<that run's directory> ckpt_path=last) or pass the file: "
                "ckpt_path=/path/to/last.ckpt"
            )
        return str(path)
    if not spec.file.is_file():
        raise CheckpointError(f"checkpoint file not found: {spec.file}")
    return str(spec.file.resolve())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint on the CPU; a clear :class:`CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is corrupt, truncated or not a "
            f"torch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    if "hyper_parameters" not in ckpt or "net" not in ckpt["hyper_parameters"]:
        raise CheckpointError(
            f"{path} is not a scoresde ScoreModel checkpoint (no network config in its hyper-parameters)"
        )
    return ckpt


def check_compatible(ckpt: dict[str, Any], model: torch.nn.Module, path: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` listing the differences when the checkpoint's weights do not fit
    ``model`` (missing/unexpected keys, shape mismatches)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            lines.append("shape mismatch: " + ", ".join(f"{k} {have[k]} vs {want[k]}" for k in shapes[:3]))
        hp = ckpt.get("hyper_parameters", {})
        raise CheckpointError(
            f"checkpoint {path} does not match the configured model: {'; '.join(lines)}. The checkpoint was "
            f"trained with net={hp.get('net')} and sde={hp.get('sde')}; use the same model/sde settings."
        )


#: hyper-parameters that define the model: a checkpoint is only sampled or resumed with these unchanged
MODEL_KEYS = ("net", "sde", "parameterization", "loss", "data_shape", "levels", "data_range")
#: hyper-parameters that a resumed run must keep too (the optimizer state and the loss-noise stream follow
#: them); the others (``validation``, ``sample_dir``) may change on resume
RESUME_KEYS = (*MODEL_KEYS, "lr", "betas", "adam_eps", "weight_decay", "warmup_steps", "seed")


def config_differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """The differences between two (nested) configs, one line per key: ``"sde.beta_max: 20.0 in the
    checkpoint, 5.0 now"``. Lists and tuples compare equal when their items do; ints equal floats."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(recorded) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in current:
                out.append(f"{name}: {recorded[key]!r} in the checkpoint, not set now")
            elif key not in recorded:
                out.append(f"{name}: not in the checkpoint, {current[key]!r} now")
            else:
                out.extend(config_differences(recorded[key], current[key], name))
        return out
    if isinstance(recorded, list | tuple) and isinstance(current, list | tuple):
        if len(recorded) == len(current) and not any(
            config_differences(a, b) for a, b in zip(recorded, current)
        ):
            return []
    elif recorded == current:
        return []
    return [f"{prefix or 'value'}: {recorded!r} in the checkpoint, {current!r} now"]


def check_same_config(
    ckpt: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...], path: str | Path, what: str
) -> None:
    """Raise :class:`CheckpointError` listing every difference between the checkpoint's
    hyper-parameters and ``current`` over ``keys`` (a resume or a sample with a changed model)."""
    hp = ckpt.get("hyper_parameters", {})
    diffs = [d for key in keys if key in current for d in config_differences(hp.get(key), current[key], key)]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was trained with another configuration than the one given for {what}:\n  "
            + "\n  ".join(diffs)
            + "\nUse the checkpoint's settings (its config is in the training run's .hydra/config.yaml), or "
            "train a new model in a new directory."
        )


def _upgrade_hparams(hp: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of checkpoints written before the validation settings became one ``validation``
    mapping (``val_num_samples`` ...) in the current form."""
    legacy = {"val_solver": "solver", "val_num_samples": "num_samples", "val_sample_every": "sample_every",
              "val_bpd_examples": "bpd_examples", "val_bpd_rtol": "bpd_rtol"}
    if any(k in hp for k in legacy):
        hp = dict(hp)
        hp["validation"] = {new: hp.pop(old) for old, new in legacy.items() if old in hp}
    return hp


def load_score_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild a :class:`~scoresde.train.module.ScoreModel` from a checkpoint with its EMA weights (the
    checkpoint's ``state_dict``), in eval mode. Clear errors for corrupt or mismatched files."""
    from .module import ScoreModel

    ckpt = load_checkpoint(path)
    hp = _upgrade_hparams(dict(ckpt["hyper_parameters"]))
    try:
        model = ScoreModel(**hp)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"cannot rebuild the model of checkpoint {path}: {type(err).__name__}: {err}"
        ) from err
    check_compatible(ckpt, model, path)
    model.load_state_dict(ckpt["state_dict"])
    model.global_step_loaded = int(ckpt.get("global_step", 0))
    return model.to(map_location).eval()
