"""The app's condition group with task=sample: inpainting (paper, smc), class guidance with a classifier from
task=train_classifier, and clear errors on bad input (tiny trainings on the digits: wiring, not quality)."""

import json
import math

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


# --- task=evaluate ------------------------------------------------------------------------------------
def evaluate(runs, out, *overrides, model="score"):
    ckpt = runs / model / "checkpoints" / "last.ckpt"
    steps = [] if any(o.startswith("solver=") for o in overrides) else ["solver.steps=4"]
    return run_task(compose_config("task=evaluate", "threads=1", f"ckpt_path={ckpt}", *steps,
                                   "task.seed_sets=2", f"task.stats_dir={runs / 'stats'}",
                                   "task.kid_subsets=3", "task.kid_subset_size=10", *overrides,
                                   output_dir=out))


def test_evaluate_class_guidance_reports_accuracy_and_per_class_fid_per_scale(runs, tmp_path):
    """Per scale: the digits classifier's accuracy at the requested labels and FID/KID of each class against
    that class's training images; seed set 0 at each scale is exactly what task=sample draws."""
    from scoresde.data.digits import DigitsDataModule
    from scoresde.evaluation import build_feature_extractor, to_uint8

    clf = f"condition.classifier={runs / 'clf' / 'classifier.pt'}"
    m = evaluate(runs, tmp_path / "e", "condition=class", clf, "condition.labels=[0,7]",
                 "condition.scale=[0,2]", "num_samples=6")["condition"]
    assert m["scales"] == [0.0, 2.0] and m["per_class"] == 3 and m["seed_sets"] == 2
    saved = torch.load(tmp_path / "e" / "condition.pt", weights_only=False)
    model = load_score_model(runs / "score" / "checkpoints" / "last.ckpt")
    digits = build_feature_extractor("digits")
    train_labels = DigitsDataModule().labels("train")
    for w, r in zip(m["scales"], m["results"]):
        assert r["scale"] == w and set(r["per_class"]) == {"0", "7"}
        for c, q in r["per_class"].items():
            assert q["reference"] == {"name": f"digits-train-class{c}", "split": "train",
                                      "num_images": int((train_labels == int(c)).sum())}
            assert all(math.isfinite(v) for v in q["fid"]["values"] + q["kid"]["values"])
            assert all(0.0 <= a <= 1.0 for a in q["accuracy"]["values"])
        for key in ("accuracy", "fid", "kid"):  # the mean over classes, per seed set
            per_set = zip(*(q[key]["values"] for q in r["per_class"].values()))
            assert r[key]["values"] == pytest.approx([sum(v) / 2 for v in per_set])
        # the accuracy of set 0, recomputed from the saved samples with the digits classifier
        x = to_uint8(saved["samples"][w], model.hparams.levels, tuple(model.hparams.data_range))
        hit = (digits.logits(x).argmax(1) == saved["labels"]).double()
        assert [r["per_class"][c]["accuracy"]["values"][0] for c in ("0", "7")] == pytest.approx(
            [float(hit[:3].mean()), float(hit[3:].mean())])
        sample(runs, tmp_path / f"s{w}", "condition=class", clf, "condition.labels=[0,7]",
               "condition.per_class=3", f"condition.scale={w}")
        drawn = torch.load(tmp_path / f"s{w}" / "condition.pt", weights_only=False)["samples"]
        torch.testing.assert_close(saved["samples"][w], drawn)
    assert saved["grid"].shape == (2 * 2 * 3, 1, 8, 8)  # rows: (scale, label), 3 samples each
    assert Image.open(tmp_path / "e" / "condition.png").size[0] > 3 * 8
    saved_metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved_metrics["condition"]["results"][1]["scale"] == 2.0


def test_evaluate_classifier_free_guidance(runs, tmp_path):
    m = evaluate(runs, tmp_path, "condition=cfg", "condition.labels=[1,2]", "condition.scale=1.0",
                 "num_samples=4", "task.data_floor=false", model="cond")["condition"]
    (r,) = m["results"]
    assert m["labels"] == [1, 2] and r["scale"] == 1.0 and len(r["accuracy"]["values"]) == 2
    assert all(0.0 <= a <= 1.0 for a in r["accuracy"]["values"]) and math.isfinite(r["fid"]["mean"])


def test_evaluate_inpainting_per_method(runs, tmp_path):
    """Completions of the first num_samples // per_image test images: the known pixels exact, the RMS of the
    unknown ones as recomputed from the saved completions, FID/KID against the test split."""
    m = evaluate(runs, tmp_path, "condition=inpaint", "condition.method=[paper,smc]", "condition.particles=2",
                 "condition.per_image=2", "condition.num_images=2", "num_samples=6")["condition"]
    assert m["num_images"] == 3 and m["per_image"] == 2 and set(m["methods"]) == {"paper", "smc"}
    saved = torch.load(tmp_path / "condition.pt", weights_only=False)
    known = saved["originals"].repeat_interleave(2, dim=0)
    for method, r in m["methods"].items():
        assert r["known_max_deviation"] == 0.0
        x = saved["samples"][method]
        assert torch.equal(x[:, :, :4], known[:, :, :4])
        rms = float(((x - known)[:, :, 4:] ** 2).mean().sqrt())
        assert r["rms_unknown"]["values"][0] == pytest.approx(rms) and len(r["rms_unknown"]["values"]) == 2
        assert all(math.isfinite(v) and v > 0 for v in r["rms_unknown"]["values"])
        q = r["quality"]
        assert q["reference"]["name"] == "digits-test" and "memorization" not in q
        assert all(math.isfinite(v) for v in q["fid"]["values"] + q["kid"]["values"])
    assert saved["grid"].shape == (2 * 2 * 4, 1, 8, 8)  # per method: 2 shown images x (input, 2, original)


def test_completion_errors_of_colorization_are_in_both_spaces():
    from scoresde.conditional import colorization_transform, over_channels
    from scoresde.tasks.condition import completion_errors

    g = torch.Generator().manual_seed(0)
    known, noise = torch.rand(4, 3, 2, 2, generator=g), torch.rand(4, 3, 2, 2, generator=g)
    u = colorization_transform()
    mask = torch.tensor([True, False, False])[:, None, None]
    x = over_channels(u.T, torch.where(mask, over_channels(u, known), noise))  # gray kept, chroma drawn
    e = completion_errors(x, known, mask, u)
    assert e["known_max_deviation"] < 1e-6
    chroma = (noise - over_channels(u, known))[:, 1:]
    assert e["rms_unknown_transformed"] == pytest.approx(float((chroma ** 2).mean().sqrt()), rel=1e-5)
    assert e["rms_unknown"] == pytest.approx(float(((x - known) ** 2).mean().sqrt()))


def test_evaluate_bad_conditions_get_clear_errors_before_sampling(runs, tmp_path):
    clf = f"condition.classifier={runs / 'clf' / 'classifier.pt'}"
    cases = [
        (("condition=class",), "needs a classifier"),
        (("condition=class", clf, "condition.labels=[3,12]"), "outside the model's labels 0..9"),
        (("condition=class", clf, "condition.labels=[0,7]", "num_samples=3"), "1 sample.s. per class"),
        (("condition=class", clf, "data._feature_network_=null"), "no default feature network for data"),
        (("condition=class", clf, "sample_seeds=[1,2]"), "drop sample_seeds"),
        (("condition=cfg",), "no class conditioning"),
        (("condition=colorize",), "3-channel RGB"),
        (("condition=inpaint", "condition.method=[paper,best]"), "valid methods are paper, smc"),
        (("condition=inpaint", "condition.method=smc", "solver=ode"), "needs a stochastic sampler"),
        (("condition=inpaint", "num_samples=4000"), r"need 1..297 \(the test split"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            evaluate(runs, tmp_path, *overrides)
    with pytest.raises(ConfigError, match="task=sample takes one value"):
        sample(runs, tmp_path, "condition=class", clf, "condition.scale=[1,2]")
    assert not (tmp_path / "condition.png").exists() and not (tmp_path / "metrics.json").exists()


def test_refresh_rate_0_silences_the_conditional_samplers_bars(runs, tmp_path, capfd):
    """``progress_bar_refresh_rate=0`` silences every bar (docs/app.md), the conditional tasks' too:
    imputation, guidance and restoration draw theirs through the same setting."""
    capfd.readouterr()
    for i, cond in enumerate((["condition=inpaint", "condition.num_images=2", "condition.per_image=1"],
                              ["condition=class", "condition.scale=1.0", "num_samples=4",
                               f"condition.classifier={runs / 'clf' / 'classifier.pt'}"],
                              ["condition=superres", "condition.num_images=2", "condition.method=dps"])):
        sample(runs, tmp_path / str(i), "progress_bar_refresh_rate=0", *cond)
    err = capfd.readouterr().err
    assert "%|" not in err and "nfe/s" not in err and "it/s" not in err, err[-2000:]
