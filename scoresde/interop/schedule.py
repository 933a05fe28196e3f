"""diffusers' discrete noise schedules <-> our continuous SDEs (no diffusers import needed).

DDPM's ``N`` steps ``n = 0 .. N-1`` with the linear ``beta_n`` from ``beta_start`` to ``beta_end`` are the
Euler discretisation, at ``t = (n + 1) / N``, of the VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``
with ``beta(t) = N beta_start + t N (beta_end - beta_start)`` (Song et al. 2021, eq. 11; Table 1 evaluates
the DDPM model this way: ``beta_min = 0.1``, ``beta_max = 20`` for 1000 steps). The network keeps its
discrete timestep input: it is called at the label ``(N - 1) t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PREDICTION_TYPES", "scheduler_config_from_sde", "sde_config_from_scheduler"]

#: what a diffusers UNet2DModel predicts (``prediction_type`` of the scheduler config)
PREDICTION_TYPES = ("epsilon", "v_prediction")


def sde_config_from_scheduler(config: Mapping[str, Any]) -> dict[str, Any]:
    """The VP SDE config (``{"_target_": "scoresde.sde.VPSDE", "beta_min", "beta_max"}``) of a diffusers
    ``DDPMScheduler``/``DDIMScheduler`` config with the ``linear`` beta schedule; a ``ValueError``
    naming the setting otherwise."""
    schedule = config.get("beta_schedule", "linear")
    if schedule != "linear" or config.get("trained_betas") is not None:
        given = f"beta_schedule={schedule!r}" + (" with trained_betas" if config.get("trained_betas") else "")
        raise ValueError(f"the scheduler's {given} has no continuous VP SDE here: only the linear schedule "
                         "(DDPM's) maps to sde=vp")
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("rescale_betas_zero_snr=true (a zero terminal SNR) has no VP SDE counterpart")
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    return {"_target_": "scoresde.sde.VPSDE", "beta_min": n * start, "beta_max": n * end}


def scheduler_config_from_sde(sde: Mapping[str, Any], num_train_timesteps: int = 1000) -> dict[str, Any]:
    """The ``DDIMScheduler`` keyword arguments of a VP SDE config (the inverse of
    :func:`sde_config_from_scheduler`): ``beta_start = beta_min / N``, ``beta_end = beta_max / N``."""
    if not str(sde.get("_target_", "")).endswith(".VPSDE"):
        raise ValueError(f"only the VP SDE has a diffusers scheduler; got {sde.get('_target_')}")
    n = int(num_train_timesteps)
    return {
        "num_train_timesteps": n,
        "beta_start": float(sde.get("beta_min", 0.1)) / n,
        "beta_end": float(sde.get("beta_max", 20.0)) / n,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": True,
        "timestep_spacing": "trailing",
    }
