"""The ``paths`` group: where the app reads outside the run directory (data sets, the FID/KID statistics
cache, feature-network weights). Its values come from the environment (``${oc.env:...}``), so
``--cfg job --resolve`` shows them and ``paths.x=...`` overrides them; :func:`export_paths` hands them to
the library, which looks the same variables up when a path is not given explicitly."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

__all__ = ["ENV_OF_PATH", "export_paths"]

#: ``paths`` key -> the environment variable the library reads
ENV_OF_PATH = {
    "data_dir": "SCORESDE_DATA_DIR",
    "stats_dir": "SCORESDE_STATS_DIR",
    "weights_dir": "SCORESDE_WEIGHTS_DIR",
    "inception_weights": "SCORESDE_INCEPTION_WEIGHTS",
}


def export_paths(cfg: DictConfig) -> dict[str, str]:
    """Set the environment variables of :data:`ENV_OF_PATH` from ``cfg.paths`` (null values are left
    alone); returns what was set."""
    paths = OmegaConf.select(cfg, "paths")
    if paths is None:
        return {}
    out = {}
    for key, env in ENV_OF_PATH.items():
        value = OmegaConf.select(paths, key)
        if value is not None and str(value) != "":
            out[env] = os.path.expanduser(str(value))
    os.environ.update(out)
    return out
