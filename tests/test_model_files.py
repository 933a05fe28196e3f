"""Files other tools write or read: official score_sde_pytorch ``.pth`` checkpoints through the app's
tasks (the small official-format fixtures of tests/fixtures/score_sde_pytorch), scoresde weights as
safetensors (no pickle), and the samples ``.npz`` in the paper's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_app_run import TOY_BASE

from scoresde.evaluation.samples import read_samples_npz, to_pixels, write_samples_npz
from scoresde.nets.checkpoint import CheckpointMismatchError
from scoresde.quantization import quantize
from scoresde.tasks import compose_config, run_task
from scoresde.tasks.model_files import load_model_file
from scoresde.train import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "score_sde_pytorch"
#: the fixtures' overrides of the paper's CIFAR-10 networks (see the fixtures' README.md / meta.json)
SMALL = [
    "model.nf=16",
    "model.ch_mult=[1,2]",
    "model.num_res_blocks=1",
    "model.attn_resolutions=[8]",
    "model.image_size=16",
    "model.dropout=0.0",
    "trainer=cpu",
    "threads=1",
]
PRESET = {"ncsnpp_ve_small": "cifar10_ve_ncsnpp_cont", "ddpmpp_vp_small": "cifar10_vp_ddpmpp_cont"}


@pytest.mark.parametrize("name", sorted(PRESET))
def test_official_checkpoint_loads_with_its_preset(name):
    """The app's model of an official .pth computes the reference network's outputs with the EMA weights."""
    cfg = compose_config(f"experiment={PRESET[name]}", *SMALL)
    model = load_model_file(cfg, FIXTURES / f"{name}.pth")
    io = torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)
    with torch.no_grad():
        out = model.net(io["x"], io["labels"])
    torch.testing.assert_close(out, io["out_ema_weights"], rtol=1e-4, atol=1e-4)
    assert model.data_shape == (3, 16, 16) and model.hparams.levels == 256
    assert model.global_step_loaded == 7  # the fixtures' 'step'


def test_sample_task_from_an_official_checkpoint_needs_no_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORESDE_DATA_DIR", str(tmp_path / "no-data-here"))
    cfg = compose_config(
        "task=sample",
        "experiment=cifar10_ve_ncsnpp_cont",
        f"ckpt_path={FIXTURES / 'ncsnpp_ve_small.pth'}",
        "solver=pc",
        "solver.steps=3",
        "num_samples=5",
        *SMALL,
        output_dir=tmp_path,
    )
    metrics = run_task(cfg)
    assert metrics["sampling"]["num_samples"] == 5
    npz = read_samples_npz(tmp_path / "samples.npz")
    assert npz["samples"].shape == (5, 16, 16, 3) and npz["samples"].dtype == np.uint8
    assert npz["samples_model"].shape == (5, 3, 16, 16)


def test_official_checkpoint_with_the_wrong_preset_is_a_clear_error():
    cfg = compose_config("experiment=cifar10_vp_ddpmpp_cont", *SMALL)
    with pytest.raises(CheckpointMismatchError, match=r"experiment=cifar10_ve_ncsnpp_cont"):
        load_model_file(cfg, FIXTURES / "ncsnpp_ve_small.pth")
    with pytest.raises(CheckpointMismatchError, match=r"does not fit the configured network"):
        load_model_file(compose_config("experiment=cifar10_ve_ncsnpp_cont", *SMALL[1:]),
                        FIXTURES / "ncsnpp_ve_small.pth")  # nf 128 (the full preset) vs the 16 of the file


def test_a_pth_that_is_not_official_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    cfg = compose_config("experiment=cifar10_ve_ncsnpp_cont", *SMALL)
    with pytest.raises(CheckpointError, match=r"not an official score_sde_pytorch checkpoint"):
        load_model_file(cfg, tmp_path / "other.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"cannot read"):
        load_model_file(cfg, tmp_path / "bad.pth")


#: test_app_run's tiny toy2d run, a few steps long
TOY = [*TOY_BASE, "trainer.max_steps=4", "trainer.val_check_interval=4",
       "validation.num_samples=8", "validation.bpd_examples=0", "solver.steps=5", "num_samples=6"]


def test_safetensors_weights_sample_like_the_checkpoint(tmp_path):
    from safetensors import safe_open

    run = tmp_path / "train"
    metrics = run_task(compose_config(*TOY, "task.likelihood=false", output_dir=run))
    st = Path(metrics["weights_safetensors"])
    assert st == run / "weights_ema.safetensors" and st.is_file()
    with safe_open(str(st), framework="pt") as f:  # configs readable without torch.load / pickle
        meta = f.metadata()
    assert meta["format"] == "scoresde.weights/1"
    assert json.loads(meta["net"])["_target_"] == "scoresde.nets.MLP"
    assert json.loads(meta["sde"])["_target_"] == "scoresde.sde.VPSDE"
    assert json.loads(meta["data_shape"]) == [2] and json.loads(meta["global_step"]) == 4
    outs = {}
    for kind, path in (("ckpt", run / "checkpoints" / "last.ckpt"), ("st", st)):
        out = tmp_path / kind
        run_task(compose_config(*TOY, "task=sample", f"ckpt_path={path}", output_dir=out))
        outs[kind] = read_samples_npz(out / "samples.npz")["samples"]
    assert outs["st"].shape == (6, 2) and outs["st"].dtype == np.float32
    np.testing.assert_array_equal(outs["st"], outs["ckpt"])  # the same EMA weights, the same samples


def test_safetensors_without_scoresde_metadata_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match=r"not scoresde weights"):
        load_model_file(compose_config(), tmp_path / "w.safetensors")


def test_samples_npz_has_the_papers_layout(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 5, generator=g) * 2.2 - 1.1  # a little outside [-1, 1] too
    write_samples_npz(tmp_path / "s.npz", x, levels=256, data_range=(-1.0, 1.0), seeds=list(range(6)))
    z = read_samples_npz(tmp_path / "s.npz")
    assert z["samples"].dtype == np.uint8 and z["samples"].shape == (6, 4, 5, 3)
    k = quantize(x, 256, (-1.0, 1.0))  # 256 levels: the pixel value is the bin
    np.testing.assert_array_equal(z["samples"], k.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(z["samples_model"], x.numpy())
    assert list(z["seeds"]) == list(range(6)) and int(z["levels"]) == 256
    # 17 grey levels stretch to 0, 16, ..., 255 as an 8-bit image shows them
    px = to_pixels(torch.linspace(-1, 1, 17).reshape(1, 1, 1, 17), 17)
    assert px.shape == (1, 1, 17, 1) and px[0, 0, :, 0].tolist() == [round(i * 255 / 16) for i in range(17)]


@pytest.fixture
def rgb16_folder(tmp_path):
    """20 random 16x16 RGB PNGs: a data set the size of the fixtures' networks."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_likelihood_and_evaluate_tasks_take_an_official_checkpoint(tmp_path, rgb16_folder, monkeypatch):
    from scoresde.evaluation.errors import WeightsNotFoundError

    common = [
        "experiment=cifar10_ve_ncsnpp_cont", f"ckpt_path={FIXTURES / 'ncsnpp_ve_small.pth'}", *SMALL,
        "data=folder", f"data.root={rgb16_folder}", "data.resolution=16", "data.data_range=[0,1]",
        "likelihood.num_examples=2", "likelihood.rtol=1e-2", "likelihood.atol=1e-2",
    ]
    metrics = run_task(compose_config("task=likelihood", *common, output_dir=tmp_path / "lik"))
    assert metrics["likelihood"]["num_examples"] == 2 and np.isfinite(metrics["likelihood"]["bpd"])
    # evaluate loads it too; FID needs the Inception weights, absent here: an error before sampling
    monkeypatch.setenv("SCORESDE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    cfg = compose_config("task=evaluate", *common, "solver.steps=2", "num_samples=4", "task.seed_sets=1",
                         "task.likelihood=false", output_dir=tmp_path / "eval")
    with pytest.raises(WeightsNotFoundError, match="Inception weights not found"):
        run_task(cfg)
