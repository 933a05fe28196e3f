"""``task=sample export_png=true``: one PNG per sample in ``samples/`` -- the folder layout that pytorch-fid,
clean-fid and torch-fidelity read -- with the pixels of ``samples.npz``.

pytorch-fid itself cannot be imported here (its reader imports torchvision, which has no build for the CPU
torch at hand), so the folder is read back as pytorch-fid's ``ImagePathDataset`` does: the image files of
the folder sorted by name, each opened with Pillow and converted to RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

#: pytorch-fid's IMAGE_EXTENSIONS
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}


def read_folder_as_pytorch_fid(folder) -> np.ndarray:
    files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]), files


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits")
    run_task(compose_config(
        "threads=1", "trainer.max_steps=3", "trainer.val_check_interval=3", "validation.num_samples=4",
        "validation.bpd_examples=0", "validation.solver.steps=3", "solver.steps=5", "num_samples=4",
        "likelihood.num_examples=2", "logger=none", "progress_bar_refresh_rate=0", output_dir=run,
    ))
    return run / "checkpoints" / "last.ckpt"


def test_export_png_writes_one_png_per_sample_in_the_fid_layout(digits_ckpt, tmp_path):
    out = tmp_path / "s"
    metrics = run_task(compose_config("task=sample", "threads=1", f"ckpt_path={digits_ckpt}",
                                      "solver.steps=5", "num_samples=11", "export_png=true", output_dir=out))
    assert metrics["files"]["folder"] == str(out / "samples")
    assert (out / "samples.png").is_file() and (out / "samples.npz").is_file()  # beside the grid and npz
    rgb, files = read_folder_as_pytorch_fid(out / "samples")
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(11)]
    assert rgb.shape == (11, 8, 8, 3)
    npz = np.load(out / "samples.npz")["samples"]  # (11, 8, 8, 1) uint8
    np.testing.assert_array_equal(rgb, np.repeat(npz, 3, axis=-1))  # sample i is file i, pixel for pixel
    assert Image.open(files[0]).mode == "L"  # one channel: greyscale PNG


def test_export_png_never_overwrites_and_needs_images(digits_ckpt, tmp_path):
    out = tmp_path / "s"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "000000.png").write_bytes(b"a user's file")
    cfg = compose_config("task=sample", "threads=1", f"ckpt_path={digits_ckpt}", "num_samples=2",
                         "export_png=true", output_dir=out)
    with pytest.raises(ConfigError, match="already holds PNG files"):
        run_task(cfg)
    assert (out / "samples" / "000000.png").read_bytes() == b"a user's file"
