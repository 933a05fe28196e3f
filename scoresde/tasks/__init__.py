"""The app's tasks, one small module each: ``train`` (fit, then sample and evaluate with the EMA
weights), ``sample``, ``likelihood`` and ``evaluate`` (from a checkpoint). :func:`run_task` dispatches on
``cfg.task.name``; ``python -m scoresde.run`` is the Hydra entry point."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

__all__ = ["TASKS", "compose_config", "run_task"]

#: task name -> "module:function" (imported on use, so `task=sample` does not import the trainer's extras)
TASKS = {
    "train": "scoresde.tasks.train:run_train",
    "sample": "scoresde.tasks.sample:run_sample",
    "likelihood": "scoresde.tasks.likelihood:run_likelihood",
    "evaluate": "scoresde.tasks.evaluate:run_evaluate",
    "train_classifier": "scoresde.tasks.train_classifier:run_train_classifier",
    "export": "scoresde.tasks.export:run_export",
}


def compose_config(*overrides: str, output_dir: str | None = None) -> DictConfig:
    """The app's config with command-line style ``overrides`` (``"sde=ve"``, ``"trainer.max_steps=10"``),
    composed with Hydra's compose API -- for notebooks and tests. ``output_dir`` is where a task run with
    :func:`run_task` outside ``python -m scoresde.run`` writes (default: the working directory)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("scoresde.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    cfg._overrides_ = list(overrides)  # what the command line would have named (Hydra records it there)
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    OmegaConf.set_struct(cfg, True)
    return cfg


def run_task(cfg: DictConfig) -> dict[str, Any]:
    """Run the task named ``cfg.task.name`` and return its metrics."""
    import importlib

    name = str(cfg.task.name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
