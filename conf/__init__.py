"""Hydra configuration of scoresde, installed as the package ``scoresde.conf`` (see pyproject.toml).

Compose it with ``hydra.initialize_config_module("scoresde.conf")`` or run ``python -m scoresde.run``.
Hydra's record of a run (``.hydra``) is written by the app once the run's checks pass
(:mod:`scoresde.tasks.record`), not by Hydra itself.
"""
