#!/usr/bin/env python3
"""Dependency floor check: install the LOWEST declared version of every direct dependency of scoresde
(``name>=X`` in pyproject.toml -> ``name==X``) into a fresh virtual environment, then run a short toy
train + sample + evaluate (FID/KID through torchmetrics) with the app, so a declared floor is a tested
fact rather than a guess.

    python scripts/floor_check.py [--venv DIR] [--keep] [--extras plot,tensorboard,sweep]

Other packages (the dependencies' own dependencies) resolve to the newest compatible release, as a user's
``pip install scoresde`` would give them (uv calls this ``--resolution lowest-direct``).

torch is the one exception: PyPI's Linux wheels of torch are CUDA builds of several GB, so the check takes
the CPU wheel that pip finds (``$FLOOR_TORCH``, default ``torch==2.13.0``, the build CI uses) and says so.

``--extras`` also pins the floors of those optional extras and runs their tests. CI runs it with every
extra but ``slurm`` (``.ci/run``: ``--extras plot,tensorboard,sweep,wandb,diffusers``; 5 min 11 s on a busy
2-core machine). ``slurm`` (hydra-submitit-launcher) is left out: its test needs the SLURM daemons that
``.ci/run`` starts as root around the whole suite, and CI installs its newest release for that test.

Prints the versions it installed (and writes them to ``<venv>/floor_versions.txt``); exit status 1 when
the install or the run fails. Takes ~2-3 minutes on 2 cores (most of it the installs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = os.environ.get("FLOOR_TORCH", "torch==2.13.0")


#: with --extras: the tests that exercise each extra
EXTRA_TESTS = {
    "plot": ["tests/test_plots.py"],
    "tensorboard": ["tests/test_trainer_groups.py", "tests/test_run_summaries.py"],
    "sweep": ["tests/test_sweep.py"],
    "wandb": ["tests/test_trainer_groups.py"],
    "diffusers": ["tests/test_interop_diffusers.py", "tests/test_interop_optional.py"],
}


def floors(pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{name: lowest version}`` of the direct dependencies (``project.dependencies``) and of the
    packages of the optional ``extras``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = list(project["dependencies"])
    for extra in extras:
        deps += [d for d in project["optional-dependencies"][extra] if not d.startswith("scoresde")]
    out = {}
    for dep in deps:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)$", dep)
        name, spec = m.group(1), m.group(2)
        low = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        if low is None:
            raise SystemExit(f"error: dependency {dep!r} in pyproject.toml declares no floor (name>=X)")
        out[name.lower()] = low.group(1)
    return out


def _norm(version: str) -> str:
    """``1.10.0`` and ``1.10`` are the same release."""
    return re.sub(r"(\.0)+$", "", version)


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, **kw)
    if res.returncode != 0:
        if res.stderr:
            print(res.stderr, file=sys.stderr)
        raise SystemExit(f"error: the floor check failed: {' '.join(cmd)} exited with {res.returncode}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=None, help="where to build the venv (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the venv and the run directory")
    ap.add_argument("--extras", default="",
                    help="also the floors of these extras (e.g. plot,tensorboard,sweep) and their tests")
    args = ap.parse_args()
    extras = tuple(e for e in args.extras.split(",") if e)
    t0 = time.perf_counter()
    work = Path(args.venv or tempfile.mkdtemp(prefix="scoresde-floors-"))
    venv = work / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    low = floors(extras=extras)
    pins = {n: v for n, v in low.items() if n != "torch"}
    constraints = work / "floors.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # pip's warnings about the local package index (one line per package) say nothing here
    quiet = {"stderr": subprocess.PIPE, "text": True}
    run([*pip, TORCH], **quiet)
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    run([*pip, "-c", str(constraints), "-e", target, *(["pytest"] if extras else [])], **quiet)

    # the versions that were installed, checked against the floors
    code = (
        "import importlib.metadata as m, sys\n"
        "for n in sys.argv[1:]: print(n, m.version(n))\n"
    )
    got = subprocess.run([py, "-c", code, *low], check=True, capture_output=True, text=True).stdout
    versions = dict(line.split() for line in got.splitlines())
    bad = [f"{n} {versions[n]} (floor {v})" for n, v in pins.items() if _norm(versions[n]) != _norm(v)]
    if bad:
        print("error: not installed at the floor: " + ", ".join(bad), file=sys.stderr)
        return 1

    # a short toy run: train the digits U-Net (EMA, checkpoints), sample from the checkpoint, evaluate
    # FID/KID (torchmetrics with the shipped digits classifier as the feature network)
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", SCORESDE_STATS_DIR=str(work / "stats"))
    app = [py, "-m", "scoresde.run", "threads=1", "progress_bar_refresh_rate=0"]
    run([*app, f"hydra.run.dir={out}/train", "trainer.max_steps=30", "trainer.val_check_interval=30",
         "validation.num_samples=4", "validation.solver.steps=5", "validation.bpd_examples=0",
         "checkpoint.every_n_steps=30", "num_samples=8", "solver.steps=10", "task.likelihood=false"],
        env=env, cwd=work)
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    run([*app, "task=sample", f"hydra.run.dir={out}/sample", f"ckpt_path={ckpt}", "num_samples=8",
         "solver.steps=10"], env=env, cwd=work)
    run([*app, "task=evaluate", f"hydra.run.dir={out}/evaluate", f"ckpt_path={ckpt}", "num_samples=32",
         "solver.steps=10", "task.seed_sets=2", "task.likelihood=false", "task.kid_subsets=5",
         "task.kid_subset_size=16"], env=env, cwd=work)
    wanted = ("train/weights_ema.pt", "sample/samples.npz", "evaluate/metrics.json")
    for f in (out / name for name in wanted):
        if not f.is_file():
            print(f"error: the toy run did not write {f}", file=sys.stderr)
            return 1

    if extras:
        tests = sorted({t for e in extras for t in EXTRA_TESTS.get(e, [])})
        run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], env=env, cwd=ROOT)
    report = "".join(f"{n}=={versions[n]}\n" for n in low)
    (work / "floor_versions.txt").write_text(report)
    print(f"floor check passed in {time.perf_counter() - t0:.0f} s with the lowest declared versions "
          f"(torch: {TORCH}, the CPU wheel at hand):")
    print(report, end="")
    if not args.keep and args.venv is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
