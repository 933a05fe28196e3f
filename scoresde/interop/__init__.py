"""Models in and out of the `diffusers` library (the optional extra ``pip install -e '.[diffusers]'``).

* :func:`from_diffusers`: a local diffusers pipeline folder (``unet/`` holding a ``UNet2DModel``,
  ``scheduler/`` a ``DDPMScheduler``/``DDIMScheduler`` config) as a :class:`~scoresde.train.ScoreModel`:
  the discrete linear beta schedule of ``N`` steps becomes the continuous VP SDE with
  ``beta_min = N beta_start``, ``beta_max = N beta_end``, the cosine one the cosine VP SDE
  (:mod:`.schedule`), the network is called at
  the timestep label ``(N - 1) t``, epsilon or v prediction. The app: ``model=diffusers
  ckpt_path=<folder>``.
* :func:`export_diffusers`: a trained VP/sub-VP model as a folder that diffusers loads
  (``DDIMPipeline.from_pretrained``): our network as a diffusers model class (:class:`ScoresdeUNet`) and,
  for the VP SDE, the matching ``DDIMScheduler`` config. The app: ``task=export format=diffusers``.

Nothing here is imported by the rest of the package, and diffusers is imported only on use, so the core
works without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DiffusersUNet", "ScoresdeUNet", "export_diffusers", "from_diffusers"]

_WHERE = {
    "DiffusersUNet": "scoresde.interop.diffusers_in",
    "from_diffusers": "scoresde.interop.diffusers_in",
    "ScoresdeUNet": "scoresde.interop.diffusers_out",
    "export_diffusers": "scoresde.interop.diffusers_out",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'scoresde.interop' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
