"""A trained VP/sub-VP score model as a folder that diffusers loads: :func:`export_diffusers`.

Our networks (the U-Net of ``scoresde/nets/unet.py``, DDPM++) are not diffusers' ``UNet2DModel`` layer
for layer, so the folder holds them as a diffusers *custom model*, :class:`ScoresdeUNet` (a
``ModelMixin``/``ConfigMixin`` whose config is our network and SDE config and whose weights file is
diffusers' ``diffusion_pytorch_model.safetensors``). It takes diffusers' calling convention,
``unet(sample, timestep).sample`` with the discrete timestep ``n = (N - 1) t``, and returns the noise
prediction ``eps``. The folder::

    <out>/model_index.json                        DDIMPipeline: unet = scoresde.interop ScoresdeUNet
    <out>/unet/config.json, diffusion_pytorch_model.safetensors
    <out>/scheduler/scheduler_config.json         VP only: the DDIMScheduler of the same linear betas

``DDIMPipeline.from_pretrained(<out>)`` (with scoresde installed) samples from it with diffusers' own
scheduler. A sub-VP model has no diffusers scheduler (its marginals are not DDPM's): the folder then holds
``unet/`` only, loaded with ``ScoresdeUNet.from_pretrained(<out>/unet)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, DDIMPipeline, DDIMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from scoresde.sde import expand_to
from scoresde.train.build import instantiate, network_from_config

from .schedule import scheduler_config_from_sde

__all__ = ["ScoresdeUNet", "export_diffusers"]

#: the SDEs a diffusers export takes (their noise label is 999 t)
EXPORTABLE_SDES = ("scoresde.sde.VPSDE", "scoresde.sde.SubVPSDE")


class ScoresdeUNet(ModelMixin, ConfigMixin):
    """A scoresde network as a diffusers model: ``forward(sample, timestep)`` returns the noise
    prediction at the discrete timestep ``n`` (time ``t = n / (N - 1)``, our label ``999 t``); for a
    network trained with ``parameterization="score"``, ``eps = -s(t) score``.

    Args:
        network: our network config (``_target_`` and arguments, as in a checkpoint's hyper-parameters).
        sde_config: the SDE config (VP or sub-VP).
        parameterization: ``eps`` or ``score``.
        sample_size, in_channels, out_channels: the image shape (what diffusers' pipelines read).
        num_train_timesteps: ``N`` of the discrete timesteps.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, network: dict | None = None, sde_config: dict | None = None,
                 parameterization: str = "eps", sample_size: int = 32, in_channels: int = 3,
                 out_channels: int = 3, num_train_timesteps: int = 1000):
        super().__init__()
        if network is None or sde_config is None:
            raise ValueError("ScoresdeUNet needs the network and SDE configs (network=..., sde_config=...)")
        self.net = network_from_config(network)
        self.sde = instantiate(sde_config)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                return_dict: bool = True) -> UNet2DOutput | tuple[torch.Tensor]:
        n = torch.as_tensor(timestep, device=sample.device, dtype=sample.dtype)
        n = n.expand(sample.shape[0]) if n.dim() == 0 else n
        t = n / (self.config.num_train_timesteps - 1)
        out = self.net(sample, self.sde.noise_label(t))
        if self.config.parameterization == "score":
            out = -expand_to(self.sde.std(t), sample) * out
        return UNet2DOutput(sample=out) if return_dict else (out,)


def export_diffusers(model: Any, out: str | Path, num_train_timesteps: int = 1000) -> Path:
    """Write ``model`` (a :class:`~scoresde.train.ScoreModel` on a VP or sub-VP SDE, image data) as a
    diffusers folder ``out`` (see the module docstring); a ``ValueError`` for what cannot be exported.
    ``out`` must not exist or be empty. Returns ``out``."""
    hp = model.hparams
    sde, shape = dict(hp.sde), tuple(hp.data_shape or ())
    if sde.get("_target_") not in EXPORTABLE_SDES:
        raise ValueError(f"format=diffusers exports VP and sub-VP models; this one is {sde.get('_target_')}")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"format=diffusers exports models of square images; this one's data: {shape}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose another output directory")
    unet = ScoresdeUNet(network=dict(hp.net), sde_config=sde, parameterization=str(hp.parameterization),
                        sample_size=shape[1], in_channels=shape[0], out_channels=shape[0],
                        num_train_timesteps=int(num_train_timesteps))
    unet.net.load_state_dict(model.net.state_dict())
    unet = unet.to("cpu").eval()
    if sde["_target_"].endswith(".VPSDE"):
        scheduler = DDIMScheduler(**scheduler_config_from_sde(sde, num_train_timesteps))
        DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    else:
        unet.save_pretrained(out / "unet", safe_serialization=True)
    return out
