"""A diffusers pipeline folder (``unet/`` + ``scheduler/``) as a score model: :func:`from_diffusers`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scoresde.sde import expand_to
from scoresde.train.build import instantiate

from .schedule import PREDICTION_TYPES, sde_config_from_scheduler

__all__ = ["DiffusersUNet", "from_diffusers", "read_pipeline_folder"]

#: our VP/sub-VP noise label is ``999 t`` (:meth:`scoresde.sde.VPSDE.noise_label`)
VP_LABEL_SCALE = 999.0


def _require_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "diffusers models need the diffusers package: pip install -e '.[diffusers]'"
        ) from err
    return diffusers


class DiffusersUNet(nn.Module):
    """diffusers' ``UNet2DModel`` as a scoresde network ``net(x, c)`` that predicts the noise.

    The label ``c = 999 t`` of the VP SDE becomes the UNet's timestep ``(N - 1) t``. With
    ``prediction_type="v_prediction"`` the UNet predicts ``v = m(t) eps - s(t) x_0`` (Salimans & Ho 2022),
    and the noise is ``eps = s(t) x + m(t) v`` (``m^2 + s^2 = 1``), with ``m``, ``s`` of the (VP) SDE.

    Args:
        unet: the ``UNet2DModel`` config (``config.json`` of the folder's ``unet/``).
        num_train_timesteps: ``N`` of the scheduler.
        prediction_type: ``epsilon`` or ``v_prediction``.
        sde: the SDE config (VP or cosine VP: :func:`~scoresde.interop.schedule.sde_config_from_scheduler`).
    """

    def __init__(self, unet: Mapping[str, Any], num_train_timesteps: int = 1000,
                 prediction_type: str = "epsilon", sde: Mapping[str, Any] | None = None):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not supported; "
                             f"valid: {', '.join(PREDICTION_TYPES)}")
        if int(num_train_timesteps) < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        self.unet = _require_diffusers().UNet2DModel.from_config(dict(unet))
        self.num_train_timesteps = int(num_train_timesteps)
        self.prediction_type = prediction_type
        self._vp = instantiate(dict(sde or {"_target_": "scoresde.sde.VPSDE"}))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t = c / VP_LABEL_SCALE
        out = self.unet(x, t * (self.num_train_timesteps - 1)).sample
        if self.prediction_type == "epsilon":
            return out
        m, s = self._vp.mean_coef(t), self._vp.std(t)
        return expand_to(s, x) * x + expand_to(m, x) * out


def read_pipeline_folder(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ``unet/`` folder and the scheduler config of a diffusers pipeline folder; a ``ValueError``
    saying what is missing otherwise."""
    path = Path(path).expanduser()
    unet_dir, sched = path / "unet", path / "scheduler" / "scheduler_config.json"
    if not (unet_dir / "config.json").is_file() or not sched.is_file():
        raise ValueError(
            f"{path} is not a diffusers pipeline folder: expected unet/config.json (a UNet2DModel) and "
            "scheduler/scheduler_config.json (a DDPMScheduler or DDIMScheduler), as "
            "DDPMPipeline.save_pretrained writes them"
        )
    unet_cfg = json.loads((unet_dir / "config.json").read_text())
    if unet_cfg.get("_class_name") not in (None, "UNet2DModel"):
        raise ValueError(f"{unet_dir} holds a {unet_cfg['_class_name']}, not a UNet2DModel")
    return unet_dir, json.loads(sched.read_text())


def from_diffusers(path: str | Path, *, levels: int | None = 256,
                   data_range: tuple[float, float] = (-1.0, 1.0), device: torch.device | str = "cpu"):
    """The :class:`~scoresde.train.ScoreModel` (eval mode) of the diffusers pipeline folder ``path``:
    the UNet2DModel's weights behind :class:`DiffusersUNet`, the SDE of the scheduler's linear or cosine
    beta schedule (:func:`~scoresde.interop.schedule.sde_config_from_scheduler`), the data shape of the UNet
    (``in_channels``, ``sample_size``); ``levels`` and ``data_range`` are those of the data the model
    was trained on (diffusers' image pipelines: 256 levels in ``[-1, 1]``)."""
    from scoresde.train import ScoreModel

    unet_dir, sched = read_pipeline_folder(path)
    sde = sde_config_from_scheduler(sched)
    unet = _require_diffusers().UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False)
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    size = cfg["sample_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    net = {"_target_": "scoresde.interop.DiffusersUNet", "unet": cfg,
           "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
           "prediction_type": sched.get("prediction_type", "epsilon"), "sde": sde}
    model = ScoreModel(net=net, sde=sde, parameterization="eps", data_shape=(int(cfg["in_channels"]), h, w),
                       levels=levels, data_range=data_range)
    model.net.unet.load_state_dict(unet.state_dict())
    return model.to(device).eval()
