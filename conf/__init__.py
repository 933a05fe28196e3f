"""Hydra configuration of scoresde, installed as the package ``scoresde.conf`` (see pyproject.toml).

Compose it with ``hydra.initialize_config_module("scoresde.conf")`` or run ``python -m scoresde.run``.
"""
