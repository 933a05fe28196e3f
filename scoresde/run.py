"""The command-line app: ``python -m scoresde.run [task=...] [group=option ...] [key=value ...]``.

A thin Hydra entry point; the configs are the package ``scoresde.conf`` (``conf/`` in the source tree) and
the work is done by :mod:`scoresde.tasks`. Examples::

    python -m scoresde.run                                  # the main job: train on digits, sample, bits/dim
    python -m scoresde.run task=sample ckpt_path=outputs/train/.../last.ckpt solver=ode num_samples=64
    python -m scoresde.run task=likelihood ckpt_path=.../last.ckpt
    python -m scoresde.run -m experiment=toy2d sde=vp,subvp,ve solver=em,pc,ode hydra/launcher=joblib
    python -m scoresde.run hydra.run.dir=<a run dir> ckpt_path=last       # resume that run
    python -m scoresde.run --cfg job                        # print the composed config
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

CONFIG_MODULE = "scoresde.conf"


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> dict:
    """Run the configured task (see :mod:`scoresde.tasks`)."""
    from scoresde.tasks import run_task

    return run_task(cfg)


if __name__ == "__main__":
    main()
