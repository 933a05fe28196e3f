"""The configs ship inside the package (``scoresde.conf``) and compose from an editable install and from a
built wheel alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _source_packages() -> set[str]:
    pkgs = {"scoresde.conf"}
    for init in (ROOT / "scoresde").rglob("__init__.py"):
        if "__pycache__" not in init.parts:
            pkgs.add(".".join(init.parent.relative_to(ROOT).parts))
    return pkgs


def _config_files() -> set[str]:
    return {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = _source_packages() - listed
    assert not missing, (
        f"add these packages to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    )
    for name in listed:  # data-only folders (no __init__.py) may be listed to ship their files
        path = ROOT / "conf" if name == "scoresde.conf" else ROOT.joinpath(*name.split("."))
        assert path.is_dir(), f"pyproject lists {name}, but {path} does not exist"


def test_configs_compose_from_the_installed_package():
    import scoresde.conf
    from hydra import compose, initialize_config_module

    assert Path(scoresde.conf.__file__).parent.samefile(ROOT / "conf")  # editable: the source tree's conf/
    with initialize_config_module("scoresde.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=cifar10_ve_ncsnpp_cont"])
    assert cfg.sde._target_ == "scoresde.sde.VESDE"


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """Build a wheel from a copy of the sources (the tree stays untouched) and install it into a
    target directory (no dependencies: they come from the running environment)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("scoresde", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    proc = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = dist.glob("scoresde-*.whl")
    site = tmp / "site"
    proc = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(whl)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return whl, site


def test_wheel_contains_every_config(wheel_site):
    whl, _ = wheel_site
    names = set(zipfile.ZipFile(whl).namelist())
    shipped = {
        n[len("scoresde/conf/") :] for n in names if n.startswith("scoresde/conf/") and n.endswith(".yaml")
    }
    assert shipped == _config_files()
    assert "scoresde/conf/__init__.py" in names and "scoresde/run.py" in names


def test_app_runs_from_the_wheel(wheel_site, tmp_path):
    _, site = wheel_site
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    code = (
        "import scoresde, scoresde.conf, pathlib, sys\n"
        f"assert pathlib.Path(scoresde.__file__).is_relative_to({str(site)!r}), scoresde.__file__\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('scoresde.conf', version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['sde=subvp', 'solver=ode',\n"
        "                                       'experiment=cifar10_vp_ddpmpp_cont'])\n"
        "assert cfg.sde._target_.endswith('SubVPSDE') and cfg.model.nf == 128\n"
        "print('composed-from', pathlib.Path(scoresde.conf.__file__).parent)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(site) in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "scoresde.run", "--cfg", "job", "experiment=toy2d", "sde=ve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scoresde.sde.VESDE" in proc.stdout and "scoresde.nets.MLP" in proc.stdout
