"""benchmarks/gpu_scale.py runs: its tiny configuration on the CPU (the real figures need a GPU), every
section once -- training rows with and without torch.compile (the cheap 'eager' backend here), PC and the
fastest sampler, the likelihood, and DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_scale.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the full configuration")
@pytest.mark.slow
def test_gpu_scale_tiny_configuration_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_scale.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--compile-backend", "eager", "--ddp", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "TINY configuration" in proc.stdout and "the real figures need a GPU" in proc.stdout
    result = json.loads(out.read_text())
    assert result["tiny"] and result["device"] == "CPU"
    rows = {(r["precision"], r["compile"]) for r in result["train"]}
    assert rows == {("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)}  # no TF32 on a CPU
    assert all(r["steps_per_s"] > 0 for r in result["train"])
    assert [r["sampler"] for r in result["sampling"]][0] == "pc" and len(result["sampling"]) == 2
    assert all(r["samples_per_s"] > 0 and r["nfe"] > 0 for r in result["sampling"])
    assert result["likelihood"]["images"] == 2 and result["likelihood"]["nfe"] > 0
    assert result["ddp"]["devices"] == 2 and result["ddp"]["steps_per_s"] > 0
