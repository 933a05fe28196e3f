"""Hydra's record of a run (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``) and its log file
(``run.log``), written only once the run has passed its checks, so that a refused run leaves every file of
its directory as it was.

Hydra itself would write both before the task starts (``hydra.output_subdir``, which ``conf/config.yaml``
sets to null for that reason). :func:`write_run_record` writes the record into ``.hydra`` (training) or
``.hydra-<task>`` (the tasks on a trained model), or, when that folder already holds a record (a resumed
run, a second task in the same directory), into ``.hydra-2``, ``.hydra-3``, ... beside it, and opens the
log file that :class:`RunLogFile` held back.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["RunLogFile", "record_dir_name", "write_run_record"]


class RunLogFile(logging.FileHandler):
    """Hydra's job log file (``hydra.job_logging.handlers.file`` in ``conf/config.yaml``), opened only when
    the run has passed its checks (:func:`write_run_record`): the records logged before are held and then
    written first, or dropped with the run when it is refused (its ``error:`` line is on stderr)."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None) -> None:
        super().__init__(filename, mode=mode, encoding=encoding, delay=True)
        self.held: list[logging.LogRecord] | None = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
        else:
            super().emit(record)

    def open_log(self) -> None:
        """Write the held records and every later one to the file."""
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)


def record_dir_name(task: str) -> str:
    """``.hydra`` for ``task=train``, ``.hydra-<task>`` for the other tasks."""
    return ".hydra" if task == "train" else f".hydra-{task}"


def write_run_record(cfg: DictConfig) -> Path | None:
    """Write Hydra's record of this run into a fresh folder of the run directory and open the run's log
    file; returns the folder (None outside ``python -m scoresde.run``, and in the processes of other
    ranks). Call it once the run's checks have passed."""
    from hydra.core.hydra_config import HydraConfig

    from .rundir import is_secondary_process

    if not HydraConfig.initialized() or is_secondary_process():
        return None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RunLogFile):
            handler.open_log()
    hydra_cfg = HydraConfig.instance().cfg  # the `hydra` node only
    run_dir = Path(hydra_cfg.hydra.runtime.output_dir)
    name = record_dir_name(str(cfg.task.name))
    out, k = run_dir / name, 2
    while out.exists():
        out, k = run_dir / f"{name}-{k}", k + 1
    out.mkdir(parents=True)
    for filename, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg),
                           ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        (out / filename).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    return out
