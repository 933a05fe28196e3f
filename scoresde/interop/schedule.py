"""diffusers' discrete noise schedules <-> our continuous SDEs (no diffusers import needed).

The cosine schedule (``squaredcos_cap_v2``, ``alpha_bar_n = f((n + 1) / N) / f(0)``) is the cosine VP SDE
:class:`~scoresde.sde.CosineVPSDE`, also at the label ``(N - 1) t``.

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
    """The SDE config of a diffusers ``DDPMScheduler``/``DDIMScheduler`` config: the VP SDE
    (``beta_min = N beta_start``, ``beta_max = N beta_end``) for the ``linear`` beta schedule, the cosine
    VP SDE (:class:`~scoresde.sde.CosineVPSDE`, offset 0.008 as diffusers) for ``squaredcos_cap_v2``; a
    ``ValueError`` naming the setting otherwise."""
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        raise ValueError("the scheduler's trained_betas have no continuous SDE here: only the linear "
                         "(sde=vp) and squaredcos_cap_v2 (cosine VP) schedules map to one")
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("rescale_betas_zero_snr=true (a zero terminal SNR) has no VP SDE counterpart")
    if schedule == "squaredcos_cap_v2":
        return {"_target_": "scoresde.sde.CosineVPSDE", "s": 0.008}
    if schedule != "linear":
        raise ValueError(f"the scheduler's beta_schedule={schedule!r} has no continuous SDE here: only the "
                         "linear (sde=vp) and squaredcos_cap_v2 (cosine VP) schedules map to one")
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
