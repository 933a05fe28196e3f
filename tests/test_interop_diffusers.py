"""diffusers models in and out, tested against diffusers itself (skipped without the diffusers extra).

In: a small randomly initialised ``UNet2DModel`` saved with ``save_pretrained`` as a DDIM pipeline folder.
Our ``DDIM`` from the same ``x_T`` on diffusers' time grid against diffusers' ``DDIMScheduler`` loop; the
difference left is the continuous VP SDE's ``m(t)`` against the discrete ``sqrt(alpha_bar_n)`` at the same
timestep (3.4% at ``t = 1``, 0.5% at ``t = 0.5``), which the test measures and bounds.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from scoresde.interop.schedule import scheduler_config_from_sde, sde_config_from_scheduler
from scoresde.solvers import DDIM
from scoresde.tasks import compose_config, run_task
from scoresde.train import CheckpointError

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                       reason="needs the diffusers extra: pip install -e '.[diffusers]'"),
]

N = 1000
STEPS = 50


def _unet(in_channels: int = 1, size: int = 8, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=in_channels,
                       layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


def _ddim_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    # "trailing": timesteps 999, 979, ..., 19, then alpha_bar = 1 -- our t = n / (N - 1) from 1 to 19/999
    return DDIMScheduler(num_train_timesteps=N, beta_schedule="linear", clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing", prediction_type=prediction_type)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pipeline_folder(request, tmp_path_factory):
    from diffusers import DDIMPipeline

    folder = tmp_path_factory.mktemp(f"pipe-{request.param}")
    DDIMPipeline(unet=_unet(), scheduler=_ddim_scheduler(request.param)).save_pretrained(folder)
    return folder, request.param


def test_the_linear_schedule_is_the_papers_vp_sde():
    sde = sde_config_from_scheduler({"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                                     "beta_schedule": "linear"})
    assert sde["_target_"] == "scoresde.sde.VPSDE"
    assert sde["beta_min"] == pytest.approx(0.1) and sde["beta_max"] == pytest.approx(20.0)
    back = scheduler_config_from_sde(sde)
    assert back["beta_start"] == pytest.approx(1e-4) and back["beta_end"] == pytest.approx(0.02)
    assert sde_config_from_scheduler({"beta_schedule": "squaredcos_cap_v2"}) == {
        "_target_": "scoresde.sde.CosineVPSDE", "s": 0.008}
    with pytest.raises(ValueError, match="scaled_linear"):
        sde_config_from_scheduler({"beta_schedule": "scaled_linear"})


def test_the_cosine_vp_sde_is_diffusers_cosine_schedule():
    from diffusers import DDPMScheduler

    from scoresde.sde import CosineVPSDE

    sde = CosineVPSDE()
    ab = DDPMScheduler(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    n = torch.arange(0, 990)  # beyond, diffusers clips beta at 0.999
    m2 = sde.mean_coef(n.double() / (N - 1)) ** 2
    assert torch.allclose(m2, ab[n], rtol=0.02, atol=1e-6)  # alpha_bar_n = f((n+1)/N)/f(0) vs t = n/999
    # the kernel solves the SDE: d log m / dt = -beta/2 and d s^2/dt = -beta s^2 + beta
    t, h = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), 1e-6
    dlogm = (sde.log_mean_coef(t + h) - sde.log_mean_coef(t - h)) / (2 * h)
    assert torch.allclose(dlogm, sde.drift_coef(t), rtol=1e-6)
    ds2 = (sde.std(t + h) ** 2 - sde.std(t - h) ** 2) / (2 * h)
    assert torch.allclose(ds2, 2 * sde.drift_coef(t) * sde.std(t) ** 2 + sde.diffusion(t) ** 2, rtol=1e-6)
    with pytest.raises(ValueError, match="T must lie in"):
        CosineVPSDE(T=1.0)


def test_our_ddim_equals_diffusers_ddim_on_the_cosine_schedule(tmp_path):
    from diffusers import DDIMPipeline, DDIMScheduler

    from scoresde.interop import from_diffusers
    from scoresde.score import NetworkScore
    from scoresde.sde import CosineVPSDE

    # "leading" spacing with offset 1: timesteps 981, 961, ..., 1, then alpha_bar = 1
    sched = DDIMScheduler(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                          set_alpha_to_one=True, steps_offset=1)
    DDIMPipeline(unet=_unet(), scheduler=sched).save_pretrained(tmp_path)
    model = from_diffusers(tmp_path)
    assert isinstance(model.sde, CosineVPSDE)
    pipe = DDIMPipeline.from_pretrained(tmp_path)
    pipe.scheduler.set_timesteps(STEPS)
    grid = pipe.scheduler.timesteps.tolist()
    assert grid[0] == 981 and grid[-1] == 1
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.step(pipe.unet(x, t).sample, t, x, eta=0.0).prev_sample
    sde = CosineVPSDE(T=grid[0] / (N - 1))  # start where diffusers starts
    solver = DDIM(steps=STEPS - 1, eta=0.0, eps=grid[-1] / (N - 1), denoise=True)
    ours = solver.sample(NetworkScore(model.net, sde), sde, tuple(x_T.shape), x_T=x_T)
    rel = ((ours - x).norm() / x.norm()).item()
    print(f"cosine: relative L2 difference to diffusers' DDIM: {rel:.2g}")
    assert rel < 0.01


def test_our_ddim_equals_diffusers_ddim_from_the_same_noise(pipeline_folder):
    from diffusers import DDIMPipeline

    from scoresde.interop import from_diffusers

    folder, prediction_type = pipeline_folder
    model = from_diffusers(folder, levels=256)
    assert model.sde.beta_min == pytest.approx(0.1) and model.sde.beta_max == pytest.approx(20.0)
    pipe = DDIMPipeline.from_pretrained(folder)
    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    grid = sched.timesteps.tolist()
    assert grid[0] == N - 1 and grid[-1] == (N - 1) - (STEPS - 1) * (N // STEPS)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:  # DDIMPipeline's loop, without its final clamp to [0, 1]
            x = sched.step(pipe.unet(x, t).sample, t, x, eta=0.0).prev_sample
    # our time grid on diffusers' timesteps: t_k = n_k / (N - 1) is uniform from 1 to 19/999 in 49 steps;
    # the last diffusers step (to alpha_bar = 1) is our Tweedie denoising step at eps: 50 network calls
    solver = DDIM(steps=STEPS - 1, eta=0.0, eps=grid[-1] / (N - 1), denoise=True)
    ours = solver.sample(model.score_fn, model.sde, tuple(x_T.shape), x_T=x_T)
    assert solver.nfe == STEPS
    rel = ((ours - x).norm() / x.norm()).item()
    print(f"{prediction_type}: relative L2 difference to diffusers' DDIM: {rel:.4f}")
    assert rel < 0.05  # measured: 0.033 (eps) -- the m(t) vs sqrt(alpha_bar) gap, 3.4% at t = 1
    # on diffusers' own discrete schedule the same network call gives the same step: the gap is the schedule
    n = grid[0]
    ab = sched.alphas_cumprod[n].item()
    t1 = torch.full((4,), n / (N - 1))
    m = model.sde.mean_coef(t1)[0].item()
    assert abs(m - math.sqrt(ab)) / math.sqrt(ab) < 0.04


def test_likelihood_and_sample_tasks_run_on_a_diffusers_folder(pipeline_folder, tmp_path):
    folder, _ = pipeline_folder
    common = ["model=diffusers", f"ckpt_path={folder}", "threads=1", "progress_bar_refresh_rate=0"]
    metrics = run_task(compose_config("task=likelihood", *common, "likelihood.num_examples=4",
                                      "likelihood.rtol=1e-2", "likelihood.atol=1e-2",
                                      "likelihood.bound_samples=4", output_dir=tmp_path / "l"))
    like = metrics["likelihood"]
    assert like["num_examples"] == 4 and like["num_nonfinite"] == 0 and math.isfinite(like["bpd"])
    assert like["levels"] == 17  # the configured data's (digits)
    run_task(compose_config("task=sample", *common, "solver=ddim", "num_samples=3",
                            output_dir=tmp_path / "s"))
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (3, 8, 8, 1)


def test_a_folder_needs_model_diffusers_and_a_pipeline(pipeline_folder, tmp_path):
    folder, _ = pipeline_folder
    with pytest.raises(CheckpointError, match="model=diffusers"):
        run_task(compose_config("task=sample", f"ckpt_path={folder}", "threads=1", output_dir=tmp_path / "a"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a diffusers pipeline folder"):
        run_task(compose_config("task=sample", "model=diffusers", f"ckpt_path={tmp_path / 'empty'}",
                                "threads=1", output_dir=tmp_path / "b"))
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["beta_schedule"] == "linear"


@pytest.fixture(scope="module", params=["vp", "subvp"])
def trained_ckpt(request, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"train-{request.param}")
    run_task(compose_config(
        f"sde={request.param}", "threads=1", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "validation.num_samples=4", "validation.bpd_examples=0", "validation.solver.steps=3",
        "solver.steps=5", "num_samples=4", "likelihood.num_examples=2", "logger=none",
        "progress_bar_refresh_rate=0",
        "model.init_scale=1.0",  # a network whose output is not zero at the start (the round trip must show)
        output_dir=run,
    ))
    return run / "checkpoints" / "last.ckpt", request.param


def test_export_writes_a_folder_diffusers_loads_and_reproduces_the_network(trained_ckpt, tmp_path):
    from diffusers import DDIMPipeline

    from scoresde.interop import ScoresdeUNet
    from scoresde.train import load_score_model

    ckpt, sde = trained_ckpt
    metrics = run_task(compose_config("task=export", "format=diffusers", f"ckpt_path={ckpt}", "threads=1",
                                      output_dir=tmp_path))
    folder = tmp_path / "diffusers"
    assert metrics["folder"] == str(folder) and metrics["max_abs_error"] <= 1e-5
    model = load_score_model(ckpt).eval()
    if sde == "vp":  # diffusers' own pipeline loads the folder, with the DDIMScheduler of the same betas
        pipe = DDIMPipeline.from_pretrained(folder)
        unet = pipe.unet
        assert pipe.scheduler.config.beta_start == pytest.approx(model.sde.beta_min / N)
        assert pipe.scheduler.config.beta_end == pytest.approx(model.sde.beta_max / N)
        images = pipe(batch_size=2, num_inference_steps=5, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
        assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    else:  # sub-VP: no diffusers scheduler has its marginals; the model folder alone
        assert not (folder / "scheduler").exists()
        unet = ScoresdeUNet.from_pretrained(folder / "unet")
    assert isinstance(unet, ScoresdeUNet)
    x = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    n = torch.tensor([0, 1, 250, 700, 999])
    with torch.no_grad():
        ours = model.net(x, model.sde.noise_label(n / (N - 1)))
        theirs = unet(x, n).sample
    assert ours.abs().max() > 1e-2  # a network that does something
    err = (ours - theirs).abs().max().item()
    print(f"{sde}: export round trip, max abs difference {err:.3g}")
    assert err <= 1e-5


def test_export_refuses_what_diffusers_cannot_take(trained_ckpt, tmp_path):
    ckpt, _ = trained_ckpt
    (tmp_path / "diffusers").mkdir(parents=True)
    (tmp_path / "diffusers" / "keep.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="not empty"):
        run_task(compose_config("task=export", "format=diffusers", f"ckpt_path={ckpt}", "threads=1",
                                output_dir=tmp_path))
    assert (tmp_path / "diffusers" / "keep.txt").read_text() == "a user's file"
