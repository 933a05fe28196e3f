"""The results in the experiment loggers: TensorBoard gets the test metrics and an HParams entry with the
run's config; the validation grids are labelled with their step."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from scoresde.tasks import compose_config, run_task
from scoresde.train.summaries import result_scalars

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ["threads=1", "trainer.max_steps=4", "trainer.val_check_interval=4", "checkpoint.every_n_steps=4",
         "validation.num_samples=4", "validation.solver.steps=3", "validation.bpd_examples=0",
         "num_samples=4", "solver.steps=3", "likelihood.num_examples=4", "likelihood.rtol=1e-2",
         "likelihood.atol=1e-2", "likelihood.bound_samples=4", "progress_bar_refresh_rate=0"]


def test_test_scalars_of_training_and_evaluation_results():
    train = {"likelihood": {"bpd": 1.9, "bpd_sem": 0.01, "levels": 17, "bound": {"bpd": 2.1}}}
    assert result_scalars(train) == {"test/bpd": 1.9, "test/bpd_sem": 0.01, "test/bound_bpd": 2.1}
    evaluate = {"quality": {"fid": {"name": "FID", "mean": 4.2, "std": 0.7}, "kid": {"mean": 0.01},
                            "memorization": 0.0}}
    assert result_scalars(evaluate) == {"test/fid": 4.2, "test/kid": 0.01}
    assert result_scalars({"likelihood": {"bpd": float("nan")}}) == {}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard extra")
def test_tensorboard_gets_test_metrics_and_the_config_as_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics = run_task(compose_config(*SHORT, "logger=tensorboard", output_dir=tmp_path))
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    like = metrics["likelihood"]
    for tag, value in (("test/bpd", like["bpd"]), ("test/bound_bpd", like["bound"]["bpd"])):
        assert tag in scalars, f"{tag} not in {scalars}"
        assert events.Scalars(tag)[-1].value == pytest.approx(value, rel=1e-6)
    # the HParams tab: the last session's hyper-parameters are the run's config, its metrics the test ones
    content = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hparams["sde/_target_"] == "scoresde.sde.VPSDE" and hparams["trainer/max_steps"] == 4
    assert hparams["model/_target_"] == "scoresde.nets.UNet"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.summary_metadata["_hparams_/experiment"].plugin_data.content).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"test/bpd", "test/bound_bpd"}
    # the validation grid carries its step
    grid = np.asarray(Image.open(tmp_path / "samples" / "val_step0000004.png"))
    plain = np.asarray(Image.open(tmp_path / "samples.png"))  # the same 4 samples' grid, no title
    assert grid.shape[0] == plain.shape[0] + 14 and grid[:14].min() < 128  # dark text on a white band
    assert json.loads((tmp_path / "metrics.json").read_text())["likelihood"]["bpd"] == like["bpd"]
