"""Hydra configuration of scoresde, installed as the package ``scoresde.conf`` (see pyproject.toml).

Compose it with ``hydra.initialize_config_module("scoresde.conf")`` or run ``python -m scoresde.run``.
Importing the package registers the ``hydra_subdir`` resolver of ``config.yaml``: Hydra's record of a
run (``.hydra``) of a task on a trained model goes to ``.hydra-<task>``, so that a task pointed at a
training run directory never replaces the training run's record. It also registers ``scoresde_help``,
the template of ``--help`` (:mod:`scoresde.cli_help`).
"""

from omegaconf import OmegaConf


def hydra_subdir(task: str) -> str:
    """``.hydra`` for ``task=train``, ``.hydra-<task>`` for the other tasks."""
    return ".hydra" if task == "train" else f".hydra-{task}"


if not OmegaConf.has_resolver("hydra_subdir"):
    OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir)


def scoresde_help() -> str:
    """The ``--help`` template (``hydra.help.template`` in ``config.yaml``)."""
    from scoresde.cli_help import help_template

    return help_template()


if not OmegaConf.has_resolver("scoresde_help"):
    OmegaConf.register_new_resolver("scoresde_help", scoresde_help)
