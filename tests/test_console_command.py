"""The ``scoresde`` console command (``[project.scripts]``): the same app as ``python -m scoresde.run``, a
``--help`` that starts with the tasks, the config groups and examples, and Hydra's bash completion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "scoresde"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env["PATH"] = f"{SCRIPT.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _scoresde(*args: str, cwd: Path, **env: str) -> str:
    if not SCRIPT.is_file():
        pytest.fail(f"{SCRIPT} is not installed: pip install -e . installs the console command")
    proc = subprocess.run([str(SCRIPT), *args], cwd=cwd, env={**_env(), **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_console_command_is_the_app():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"scoresde": "scoresde.run:main"}


def test_help_starts_with_tasks_groups_and_examples(tmp_path):
    from scoresde.tasks import TASKS

    out = _scoresde("--help", cwd=tmp_path)
    heads = ["== Tasks (task=NAME) ==", "== Configuration groups (group=option) ==", "== Examples ==",
             "== Config (override any key: key=value) =="]
    at = [out.index(h) for h in heads]
    assert at == sorted(at), "tasks, groups, examples, then the config dump"
    tasks = out[at[0]:at[1]]
    for name in TASKS:
        assert f"\n  {name} " in tasks, f"task {name} is not listed"
    groups = out[at[1]:at[2]]
    assert "sde: subvp, ve, vp" in groups and "solver: " in groups and "model: " in groups
    examples = [line.strip() for line in out[at[2]:at[3]].splitlines() if line.strip().startswith("scoresde")]
    assert len(examples) == 5
    assert "max_steps: 8000" in out[at[3]:]  # Hydra's dump of the composed config comes last
    assert "$APP_CONFIG_GROUPS" not in out and "$CONFIG" not in out  # Hydra filled in its placeholders


def test_help_is_the_same_from_python_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scoresde.run", "--help"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == _scoresde("--help", cwd=tmp_path)


def test_shell_completion_query_lists_options_and_keys(tmp_path):
    sde = _scoresde("-sc", "query=bash", cwd=tmp_path, COMP_LINE="scoresde sde=", COMP_POINT="13")
    assert sde.split() == ["sde=subvp", "sde=ve", "sde=vp"]
    keys = _scoresde("-sc", "query=bash", cwd=tmp_path, COMP_LINE="scoresde module.lo", COMP_POINT="18")
    assert keys.split() == ["module.loss."]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_installs_and_completes(tmp_path):
    """``eval "$(scoresde -sc install=bash)"``, then the completion function bash would call on <TAB>."""
    script = _scoresde("-sc", "install=bash", cwd=tmp_path)
    assert script.rstrip().endswith("-F hydra_bash_completion scoresde")
    line = "scoresde solver=d"
    bash = (
        f'eval "$(scoresde -sc install=bash)"; COMP_LINE="{line}"; COMP_WORDS=({line}); COMP_CWORD=1; '
        'COMP_POINT=${#COMP_LINE}; hydra_bash_completion; echo "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(["bash", "-c", bash], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["solver=ddim", "solver=dpm_solver"]
