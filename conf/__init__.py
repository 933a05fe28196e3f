"""Hydra configuration of scoresde, installed as the package ``scoresde.conf`` (see pyproject.toml).

Compose it with ``hydra.initialize_config_module("scoresde.conf")`` or run ``python -m scoresde.run``.
Hydra's record of a run (``.hydra``) is written by the app once the run's checks pass
(:mod:`scoresde.tasks.record`), not by Hydra itself. Importing the package registers ``scoresde_help``,
the template of ``--help`` (:mod:`scoresde.cli_help`).
"""

from omegaconf import OmegaConf


def scoresde_help() -> str:
    """The ``--help`` template (``hydra.help.template`` in ``config.yaml``)."""
    from scoresde.cli_help import help_template

    return help_template()


if not OmegaConf.has_resolver("scoresde_help"):
    OmegaConf.register_new_resolver("scoresde_help", scoresde_help)
