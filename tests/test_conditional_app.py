"""The app's condition group with task=sample: inpainting (paper, smc), class guidance with a classifier from
task=train_classifier, and clear errors on bad input (tiny trainings on the digits: wiring, not quality)."""

import json

import pytest
import torch
from PIL import Image

from scoresde.conditional import class_conditional_score
from scoresde.solvers import EulerMaruyama
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import ConfigError
from scoresde.train import load_score_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["threads=1", "trainer.max_steps=2", "trainer.val_check_interval=2", "checkpoint.every_n_steps=2",
        "progress_bar_refresh_rate=0", "logger=none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    run_task(compose_config(*TINY, "task.sample=false", "task.likelihood=false", "validation.bpd_examples=0",
                            "validation.num_samples=4", "validation.solver.steps=2",
                            output_dir=root / "score"))
    metrics = run_task(compose_config(*TINY, "task.sample=false", "task.likelihood=false",
                                      "model.num_classes=10", "validation.bpd_examples=0",
                                      "validation.num_samples=4", "validation.solver.steps=2",
                                      output_dir=root / "cond"))
    assert metrics["global_step"] == 2
    metrics = run_task(compose_config(*TINY, "task=train_classifier", "task.classifier.ch=8",
                                      output_dir=root / "clf"))
    assert metrics["num_classes"] == 10 and 0 <= metrics["val/acc_t0"] <= 1
    return root


def sample(runs, out, *overrides, model="score"):
    ckpt = runs / model / "checkpoints" / "last.ckpt"
    return run_task(compose_config("task=sample", "threads=1", f"ckpt_path={ckpt}", "solver.steps=4",
                                   *overrides, output_dir=out))


@pytest.mark.parametrize("method", ["paper", "smc"])
def test_inpainting_from_the_test_split(runs, tmp_path, method):
    m = sample(runs, tmp_path, "condition=inpaint", "condition.num_images=2", "condition.per_image=3",
               f"condition.method={method}", "condition.particles=2")["condition"]
    assert m["kind"] == "inpaint" and m["method"] == method and m["rmse_unknown"] > 0
    saved = torch.load(tmp_path / "condition.pt", weights_only=False)
    x, originals, mask = saved["samples"], saved["originals"], saved["mask"]
    assert x.shape == (6, 1, 8, 8) and mask.shape == (1, 8, 8) and mask[:, :4].all() and not mask[:, 4:].any()
    known = originals.repeat_interleave(3, dim=0)
    assert torch.equal(x[:, :, :4], known[:, :, :4])  # the known top half, exactly
    assert saved["grid"].shape == (2 * 5, 1, 8, 8)  # rows: input, 3 completions, original
    assert Image.open(tmp_path / "condition.png").size[0] > 5 * 8
    assert json.loads((tmp_path / "metrics.json").read_text())["condition"]["files"]["png"]


def test_class_guidance_with_a_trained_classifier(runs, tmp_path):
    m = sample(runs, tmp_path, "condition=class", f"condition.classifier={runs / 'clf' / 'classifier.pt'}",
               "condition.labels=[0,7]", "condition.per_class=3", "condition.scale=2.0")["condition"]
    assert m["labels"] == [0, 7] and m["scale"] == 2.0
    saved = torch.load(tmp_path / "condition.pt", weights_only=False)
    assert saved["samples"].shape == (6, 1, 8, 8) and saved["labels"].tolist() == [0, 0, 0, 7, 7, 7]


def test_classifier_free_guidance_of_a_class_conditional_model(runs, tmp_path):
    """A U-Net trained with model.num_classes=10 (label dropout): condition=cfg draws one row per class; at
    w = 0 the samples are the conditional model's own (the same seeds and labels)."""
    m = sample(runs, tmp_path, "condition=cfg", "condition.labels=[1,2]", "condition.per_class=2",
               "condition.scale=0.0", model="cond")["condition"]
    assert m["labels"] == [1, 2]
    saved = torch.load(tmp_path / "condition.pt", weights_only=False)
    model = load_score_model(runs / "cond" / "checkpoints" / "last.ckpt")
    assert model.net.num_classes == 10 and model.hparams.label_dropout == 0.1
    y = torch.tensor([1, 1, 2, 2])
    cond = class_conditional_score(model.net, model.sde)
    x = EulerMaruyama(steps=4).sample(lambda v, t: cond(v, t, y), model.sde, (4, 1, 8, 8),
                                      seeds=saved["seeds"])
    torch.testing.assert_close(saved["samples"], x)


def test_bad_conditions_get_clear_errors(runs, tmp_path):
    clf = f"condition.classifier={runs / 'clf' / 'classifier.pt'}"
    with pytest.raises(ConfigError, match="outside the model's labels 0..9"):
        sample(runs, tmp_path, "condition=class", clf, "condition.labels=[3,12]")
    with pytest.raises(ConfigError, match="needs a classifier"):
        sample(runs, tmp_path, "condition=class")
    with pytest.raises(ConfigError, match="no class conditioning"):
        sample(runs, tmp_path, "condition=cfg")
    with pytest.raises(ConfigError, match="3-channel RGB"):
        sample(runs, tmp_path, "condition=colorize")
    torch.save(torch.ones(4, 4, dtype=torch.bool), tmp_path / "mask.pt")
    with pytest.raises(ConfigError, match=r"does not fit the data; expected \(H, W\) = \(8, 8\)"):
        sample(runs, tmp_path, "condition=inpaint", f"condition.mask={tmp_path / 'mask.pt'}")
    with pytest.raises(ConfigError, match="neither a preset"):
        sample(runs, tmp_path, "condition=inpaint", "condition.mask=diagonal")
    assert not (tmp_path / "condition.png").exists()
