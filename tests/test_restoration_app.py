"""The app's restoration conditions (condition=superres|deblur|denoise|sdedit, noisy inpaint) with
task=sample and task=evaluate on a tiny trained model (wiring, not quality), and clear errors before any
score evaluation."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.restoration import AveragePool
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["threads=1", "trainer.max_steps=2", "trainer.val_check_interval=2", "checkpoint.every_n_steps=2",
        "progress_bar_refresh_rate=0", "logger=none"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    run_task(compose_config(*TINY, "task.sample=false", "task.likelihood=false", "validation.bpd_examples=0",
                            "validation.num_samples=4", "validation.solver.steps=2",
                            output_dir=root / "score"))
    return root / "score" / "checkpoints" / "last.ckpt"


def sample(ckpt, out, *overrides):
    steps = [] if any(o in ("solver=ode", "solver=dpm_solver") for o in overrides) else ["solver.steps=4"]
    return run_task(compose_config("task=sample", "threads=1", f"ckpt_path={ckpt}", *steps,
                                   "condition.num_images=2", "condition.per_image=2", "condition.particles=2",
                                   *overrides, output_dir=out))["condition"]


@pytest.mark.parametrize("overrides", [
    ("condition=superres",),
    ("condition=deblur", "condition.method=dps"),
    ("condition=denoise", "condition.method=pigdm", "solver=ddim", "solver.steps=3"),
    ("condition=sdedit", "condition.t0=0.3"),
    ("condition=inpaint", "condition.sigma_y=0.1", "condition.method=smc"),
    ("condition=superres", "condition.method=pinv"),
])
def test_restoration_from_the_test_split(ckpt, tmp_path, overrides):
    m = sample(ckpt, tmp_path, *overrides)
    assert m["kind"] == overrides[0].split("=")[1] and math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1
    assert math.isfinite(m["consistency"]) and m["consistency"] >= 0
    saved = torch.load(tmp_path / "condition.pt", weights_only=False)
    assert saved["samples"].shape == (4, 1, 8, 8) and saved["originals"].shape == (2, 1, 8, 8)
    assert saved["grid"].shape == (2 * 4, 1, 8, 8)  # rows: original, measurement, 2 restorations
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (4, 8, 8, 1)
    assert Image.open(tmp_path / "condition.png").size[0] > 4 * 8
    if overrides[0] == "condition=superres":  # noiseless: the restorations reproduce the measurement
        y = AveragePool(2, (1, 8, 8))(saved["originals"]).repeat_interleave(2, dim=0)
        torch.testing.assert_close(AveragePool(2, (1, 8, 8))(saved["samples"]), y, rtol=0, atol=1e-5)


def test_restoration_of_a_measurement_file_and_a_png_folder(ckpt, tmp_path):
    y = torch.rand(3, 1, 4, 4) * 2 - 1
    torch.save(y, tmp_path / "y.pt")
    m = sample(ckpt, tmp_path / "a", "condition=superres", f"condition.measurement={tmp_path / 'y.pt'}",
               "condition.num_images=3")
    assert m["num_images"] == 3 and "psnr" not in m
    saved = torch.load(tmp_path / "a" / "condition.pt", weights_only=False)
    assert saved["grid"].shape == (3 * 3, 1, 8, 8)  # measurement, 2 restorations
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.arange(64).reshape(8, 8) * 4 + i).astype(np.uint8)).save(folder / f"{i}.png")
    m = sample(ckpt, tmp_path / "b", "condition=deblur", f"condition.input={folder}", "condition.method=pinv")
    originals = torch.load(tmp_path / "b" / "condition.pt", weights_only=False)["originals"]
    assert originals.shape == (2, 1, 8, 8) and float(originals.min()) == -1.0


def test_evaluate_restoration_per_method(ckpt, tmp_path):
    m = run_task(compose_config("task=evaluate", "threads=1", f"ckpt_path={ckpt}", "solver.steps=4",
                                "task.seed_sets=2", f"task.stats_dir={tmp_path / 'stats'}",
                                "task.kid_subsets=3", "task.kid_subset_size=10", "condition=superres",
                                "condition.method=[pinv,pigdm]",
                                "condition.per_image=2", "num_samples=6", output_dir=tmp_path))["condition"]
    assert set(m["methods"]) == {"pinv", "pigdm"} and m["num_images"] == 3
    for r in m["methods"].values():
        for key in ("psnr", "ssim", "consistency"):
            assert len(r[key]["values"]) == 2 and all(math.isfinite(v) for v in r[key]["values"])
        assert all(math.isfinite(v) for v in r["quality"]["fid"]["values"])
    assert m["methods"]["pinv"]["psnr"]["std"] == 0  # deterministic


def test_bad_restoration_input_fails_before_sampling(ckpt, tmp_path):
    torch.save(torch.zeros(2, 1, 8, 8), tmp_path / "wrong.pt")
    cases = [
        (("condition=superres", "condition.sigma_y=-0.1"), "sigma_y=-0.1"),
        (("condition=superres", "condition.factor=3"), "divisible by k"),
        (("condition=superres", f"condition.measurement={tmp_path / 'wrong.pt'}"),
         "does not fit the operator"),
        (("condition=sdedit", "condition.t0=1.5"), r"t0=1.5: SDEdit starts at a time in \(0, 1\]"),
        (("condition=superres", "condition.method=smc", "solver=ode"), "stochastic sampler"),
        (("condition=deblur", "condition.method=dps", "solver=dpm_solver"), "supports the em, pc and ode"),
        (("condition=deblur", "condition.method=magic"), "valid restoration methods"),
        (("condition=superres", "condition.method=smc", "solver=pc"), "corrector=none"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            sample(ckpt, tmp_path / "x", *overrides)
