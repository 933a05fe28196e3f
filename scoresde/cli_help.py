"""The app's ``--help`` (``scoresde --help``, the same as ``python -m scoresde.run --help``): the tasks,
Hydra's list of the config groups and their options, and example commands, then Hydra's dump of the
composed config.

``config.yaml`` sets ``hydra.help.template: ${scoresde_help:}``; importing ``scoresde.conf`` registers
the resolver, which returns :func:`help_template`. Hydra fills in ``$APP_CONFIG_GROUPS`` and ``$CONFIG``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXAMPLES", "TASK_HELP", "help_template", "task_lines"]

#: one line per task (a task missing here is described by the first comment line of conf/task/<name>.yaml)
TASK_HELP = {
    "train": "train a score model, then sample the grid and the test bits/dim with its EMA weights",
    "sample": "draw samples from a trained model (ckpt_path=...): grid, npz, optionally one PNG each",
    "likelihood": "exact bits/dim of the test split (probability-flow ODE) and the variational bound",
    "evaluate": "sample quality (FID/KID over seed sets) and bits/dim of a trained model",
    "train_classifier": "train a noise-conditional classifier for classifier guidance (condition=class)",
    "export": "write a trained model as another library's model folder (format=diffusers)",
}

#: five commands a new user starts from
EXAMPLES = (
    ("the main job: train on 8x8 digits (~7 min on 2 cores), sample, bits/dim", "scoresde"),
    ("sample 64 images with the probability-flow ODE",
     "scoresde task=sample ckpt_path=outputs/train/<run>/checkpoints/last.ckpt solver=ode num_samples=64"),
    ("bits/dim of the test split",
     "scoresde task=likelihood ckpt_path=outputs/train/<run>/checkpoints/last.ckpt"),
    ("FID/KID with 20 DPM-Solver steps",
     "scoresde task=evaluate ckpt_path=outputs/train/<run>/checkpoints/last.ckpt solver=dpm_solver "
     "solver.steps=20"),
    ("a sweep: every SDE with every solver on the 2-d toy data",
     "scoresde -m experiment=toy2d sde=vp,subvp,ve solver=em,pc,ode"),
)


def _conf_dir() -> Path:
    import scoresde.conf

    return Path(scoresde.conf.__file__).parent


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith("@package"):
            return text
    return ""


def task_lines() -> list[str]:
    """``"  name  description"`` for each task of :data:`scoresde.tasks.TASKS`."""
    from scoresde.tasks import TASKS

    width = max(len(name) for name in TASKS)
    return [
        f"  {name:<{width}}  {TASK_HELP.get(name) or _first_comment(_conf_dir() / 'task' / f'{name}.yaml')}"
        for name in TASKS
    ]


def help_template() -> str:
    """Hydra's help template (``string.Template``: ``$APP_CONFIG_GROUPS`` and ``$CONFIG`` are Hydra's)."""
    examples = "\n".join(f"  # {what}\n  {cmd}" for what, cmd in EXAMPLES)
    return "\n".join([
        "scoresde: score-based generative modelling through SDEs (Song et al., ICLR 2021)",
        "",
        "Usage: scoresde [task=NAME] [group=option ...] [key=value ...]   (= python -m scoresde.run ...)",
        "       scoresde -m key=a,b ...   (a sweep: one run per combination)",
        "",
        "== Tasks (task=NAME) ==",
        *task_lines(),
        "",
        "== Configuration groups (group=option) ==",
        "$APP_CONFIG_GROUPS",
        "",
        "== Examples ==",
        examples,
        "",
        "Shell completion of groups and keys (bash): eval \"$$(scoresde -sc install=bash)\"",
        "Hydra's own options: scoresde --hydra-help.  Docs: docs/app.md",
        "",
        "== Config (override any key: key=value) ==",
        "$CONFIG",
    ])
