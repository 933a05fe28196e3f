"""Hyper-parameter search: ``optimized_metric`` makes the app return one number, and Hydra's Optuna sweeper
(the `sweep` extra) runs a two-trial study on toy data through ``hparams_search=toy2d_optuna``."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from test_app_run import TOY_BASE

from scoresde.tasks.common import ConfigError
from scoresde.tasks.sweep import metric_value, optimized_value

TOY = [*TOY_BASE, "trainer.max_steps=10", "trainer.val_check_interval=10",
       "validation.num_samples=8", "validation.bpd_examples=0", "num_samples=8", "solver.steps=5",
       "likelihood.num_examples=8"]


def test_metric_value():
    metrics = {"likelihood": {"bpd": 1.9, "split": "test"}, "val_loss": 0.5, "stopped": False}
    assert metric_value(metrics, "likelihood.bpd") == 1.9 and metric_value(metrics, "val_loss") == 0.5
    assert math.isnan(metric_value({"a": float("inf")}, "a"))
    with pytest.raises(ConfigError, match=r"optimized_metric=likelihood\.nll.*likelihood\.bpd, val_loss"):
        metric_value(metrics, "likelihood.nll")
    from omegaconf import OmegaConf

    assert optimized_value(OmegaConf.create({"optimized_metric": None}), metrics) is metrics


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="needs the sweep extra (hydra-optuna-sweeper)")
@pytest.mark.slow
def test_two_trial_optuna_study_on_toy_data(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "scoresde.run", "-m", "hparams_search=toy2d_optuna",
           "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep}",
           f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", *TOY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
    values = [t["likelihood"]["nll_nats"] for t in trials]
    assert results["best_value"] == pytest.approx(min(values), rel=1e-12)  # the app returned the metric
    assert set(results["best_params"]) == {"module.lr", "module.warmup_steps", "ema.decay"}
    assert (tmp_path / "study.db").is_file()  # optuna 2.x's SQL storage works with the pinned SQLAlchemy
