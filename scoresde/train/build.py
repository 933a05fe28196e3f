"""Build objects from plain config dicts (``{"_target_": "module.Class", **kwargs}``) without Hydra.

The LightningModule stores its network, SDE and solver configs as plain dicts in its hyper-parameters,
so a checkpoint alone rebuilds the model (``ScoreModel.load_from_checkpoint(path)``), in any program,
with or without Hydra.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["adapt_network_config", "import_target", "instantiate", "network_from_config", "plain"]

log = logging.getLogger(__name__)


def plain(cfg: Any) -> Any:
    """A config as plain Python containers (OmegaConf nodes are resolved and converted)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a dependency
        return cfg
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [plain(v) for v in cfg]
    return cfg


def import_target(path: str) -> Any:
    """The object named by a dotted path such as ``"scoresde.nets.UNet"``."""
    module_name, _, attr = str(path).rpartition(".")
    if not module_name:
        raise ValueError(f"_target_ must be a dotted path like 'package.module.Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} of _target_ {path!r}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (_target_ {path!r})") from None


def instantiate(cfg: Mapping[str, Any], **overrides: Any) -> Any:
    """Call ``cfg["_target_"]`` with the other keys (and ``overrides``) as keyword arguments."""
    cfg = dict(plain(cfg))
    if "_target_" not in cfg:
        raise ValueError(f"config has no _target_ key: {cfg}")
    target = import_target(cfg.pop("_target_"))
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    kwargs.update(overrides)
    try:
        return target(**kwargs)
    except TypeError as err:
        raise TypeError(
            f"cannot build {target.__module__}.{target.__qualname__} from {kwargs}: {err}"
        ) from err


def adapt_network_config(cfg: Mapping[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """Fill the shape arguments of a network config (``in_channels``/``image_size`` for images
    ``(C, H, W)``, ``dim`` for vectors ``(D,)``) from the data shape, so one model preset serves
    several data sets. Raises a clear error when the network cannot take data of this shape."""
    cfg = dict(plain(cfg))
    target = import_target(cfg["_target_"])
    params = inspect.signature(target).parameters
    wanted: dict[str, int] = {}
    if len(shape) == 3:
        if "image_size" in params:
            if shape[1] != shape[2]:
                raise ValueError(f"{target.__name__} needs square images, the data have shape {shape}")
            wanted.update(in_channels=shape[0], image_size=shape[1])
        elif "dim" in params:
            raise ValueError(
                f"{target.__name__} takes vectors but the data are images of shape {shape}; "
                "choose an image network, e.g. model=unet"
            )
    elif len(shape) == 1:
        if "dim" in params:
            wanted["dim"] = shape[0]
        else:
            raise ValueError(
                f"{target.__name__} takes images but the data are vectors of shape {shape}; "
                "choose a vector network, e.g. model=mlp"
            )
    for key, value in wanted.items():
        if key in params and cfg.get(key) != value:
            if cfg.get(key) is not None:
                log.info("model.%s=%s adapted to the data: %s", key, cfg.get(key), value)
            cfg[key] = value
    return cfg


def network_from_config(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network config and check that it is an ``nn.Module``."""
    net = instantiate(cfg)
    if not isinstance(net, nn.Module):
        raise TypeError(f"model _target_ {cfg.get('_target_')!r} did not build an nn.Module")
    return net
