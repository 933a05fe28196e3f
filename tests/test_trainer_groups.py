"""The trainer's config groups (lightning-hydra-template conventions): ``logger/``, ``callbacks/`` with
``_target_``, ``paths/`` through the environment, the learning-rate monitor, validation grids in the
loggers, and one progress bar per run."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import ConfigError
from scoresde.tasks.trainer import build_callbacks, build_loggers

pytestmark = pytest.mark.usefixtures("one_thread")

#: the main job (digits U-Net) cut to a few steps: 12 batches per epoch, so 30 steps span 3 epochs
DIGITS_SHORT = [
    "threads=1",
    "trainer.max_steps=30",
    "trainer.val_check_interval=15",
    "trainer.log_every_n_steps=5",
    "trainer.enable_model_summary=false",
    "checkpoint.every_n_steps=30",
    "validation.num_samples=4",
    "validation.solver.steps=3",
    "validation.bpd_examples=0",
    "num_samples=4",
    "solver.steps=3",
    "task.likelihood=false",
]


def _callback_names(*overrides, tmp_path):
    cfg = compose_config(*overrides)
    return [type(c).__name__ for c in build_callbacks(cfg, tmp_path, has_logger=True)]


def test_callbacks_group_defaults_and_overrides(tmp_path):
    names = _callback_names(tmp_path=tmp_path)
    assert names == ["EMA", "LastCheckpoint", "StepProgressBar", "LearningRateMonitor"]
    assert "EMA" not in _callback_names("ema.decay=null", tmp_path=tmp_path)
    assert "LearningRateMonitor" not in _callback_names("~callbacks.lr_monitor", tmp_path=tmp_path)
    assert "StepProgressBar" not in _callback_names("progress_bar_refresh_rate=0", tmp_path=tmp_path)
    assert _callback_names("callbacks=none", tmp_path=tmp_path) == []
    extra = "+callbacks.timer={_target_: pytorch_lightning.callbacks.Timer}"
    assert _callback_names(extra, tmp_path=tmp_path)[-1] == "Timer"
    cfg = compose_config()
    ema = build_callbacks(cfg, tmp_path, has_logger=True)[0]
    assert ema.decay == cfg.ema.decay  # the callback follows the top-level ema keys (and the experiments)
    assert build_callbacks(cfg, tmp_path, has_logger=True)[1].dirpath == str(tmp_path)
    # no logger: nothing for the learning-rate monitor to write to
    assert "LearningRateMonitor" not in [type(c).__name__ for c in build_callbacks(cfg, tmp_path, False)]


def test_callbacks_entry_without_target_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks\.bad: every entry needs a _target_"):
        build_callbacks(compose_config("+callbacks.bad={x: 1}"), tmp_path, has_logger=True)


def test_logger_group(tmp_path):
    names = [type(lg).__name__ for lg in build_loggers(compose_config("logger=csv"), tmp_path)]
    assert names == ["CSVLogger"]
    assert build_loggers(compose_config("logger=none"), tmp_path) == []
    csv_logger = build_loggers(compose_config(), tmp_path)[0]
    assert Path(csv_logger.log_dir) == tmp_path / "logs"  # <run dir>/logs/metrics.csv as before
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"pip install wandb"):
            build_loggers(compose_config("logger=wandb"), tmp_path)
    else:
        (wandb,) = build_loggers(compose_config("logger=wandb"), tmp_path)
        assert type(wandb).__name__ == "WandbLogger" and wandb._offline


def test_paths_group_reads_the_environment(monkeypatch, tmp_path):
    from scoresde.tasks.paths import export_paths

    monkeypatch.setenv("SCORESDE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SCORESDE_STATS_DIR", raising=False)
    cfg = compose_config()
    assert cfg.paths.data_dir == str(tmp_path / "data")
    assert cfg.paths.stats_dir.endswith(".cache/scoresde/stats")
    cfg = compose_config(f"paths.stats_dir={tmp_path}/stats")
    exported = export_paths(cfg)
    import os

    assert os.environ["SCORESDE_STATS_DIR"] == f"{tmp_path}/stats" == exported["SCORESDE_STATS_DIR"]
    from scoresde.evaluation.stats import default_stats_dir

    assert default_stats_dir() == tmp_path / "stats"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard extra")
def test_short_run_logs_lr_and_sample_grids_with_one_progress_bar(tmp_path, capfd):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(*DIGITS_SHORT, "logger=both", "progress_bar_refresh_rate=5", output_dir=tmp_path)
    metrics = run_task(cfg)
    assert metrics["global_step"] == 30
    err = capfd.readouterr().err
    # one bar over the 30 steps of 3 epochs: it ends at 30/30 with the loss; Lightning's per-epoch bars
    # ("Epoch 0", "Epoch 1", ...) are not drawn
    assert "30/30" in err and "loss=" in err and "training" in err
    assert "Epoch 1" not in err and "Epoch 2" not in err
    # the learning-rate monitor logs the warm-up: lr = 2e-3 * (k + 1) / 500 at step k
    with open(tmp_path / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-Adam")]
    assert rows, "no learning rate logged"
    step, lr = int(rows[-1]["step"]), float(rows[-1]["lr-Adam"])
    assert lr == pytest.approx(2e-3 * (step + 1) / 500, rel=1e-5)
    # both validation grids reach TensorBoard as images (and disk as PNG)
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "val/samples" in events.Tags()["images"]
    assert [e.step for e in events.Images("val/samples")] == [15, 30]
    assert sorted(p.name for p in (tmp_path / "samples").glob("val_step*.png")) == [
        "val_step0000015.png",
        "val_step0000030.png",
    ]


def test_optimized_metric_is_a_config_key():
    cfg = compose_config()
    assert "optimized_metric" in cfg and cfg.optimized_metric is None
    assert OmegaConf.select(compose_config("optimized_metric=likelihood.bpd"), "optimized_metric") == (
        "likelihood.bpd"
    )


def test_unknown_callback_class_is_a_config_error(tmp_path):
    cfg = compose_config("+callbacks.bad={_target_: pytorch_lightning.callbacks.NoSuchCallback}")
    with pytest.raises(ConfigError, match=r"callbacks\.bad: .*NoSuchCallback"):
        build_callbacks(cfg, tmp_path, has_logger=True)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="needs the wandb extra")
def test_wandb_logger_is_offline_and_takes_the_sample_grid(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from scoresde.train.images import log_png_to_loggers

    monkeypatch.setenv("WANDB_SILENT", "true")
    (wandb_logger,) = build_loggers(compose_config("logger=wandb"), tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "grid.png")
    assert log_png_to_loggers([wandb_logger], "val/samples", tmp_path / "grid.png", 5) == ["WandbLogger"]
    wandb_logger.experiment.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")  # written under the run directory, nothing uploaded
    assert list(run.rglob("media/images/val/samples_*.png"))
