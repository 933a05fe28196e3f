"""The Hydra configs compose (Hydra's compose API) and bad configs fail with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from scoresde.tasks.common import ConfigError, validate_config
from scoresde.train.build import adapt_network_config, instantiate, plain

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "sde": ["vp", "subvp", "ve"],
    "solver": sorted(p.stem for p in (ROOT / "conf" / "solver").glob("*.yaml")),
    "trainer": ["cpu", "gpu", "ddp"],
    "task": ["train", "sample", "likelihood", "evaluate"],
    "data": ["toy2d", "digits", "mnist", "cifar10", "folder"],
    "model": [
        "mlp",
        "unet",
        "ddpmpp_cifar10",
        "ddpmpp_deep_cifar10",
        "ncsnpp_cifar10",
        "ncsnpp_deep_cifar10",
    ],
}
EXPERIMENTS = [
    "cifar10_vp_ddpmpp_cont",
    "cifar10_vp_ddpmpp_deep_cont",
    "cifar10_subvp_ddpmpp_cont",
    "cifar10_subvp_ddpmpp_deep_cont",
    "cifar10_ve_ncsnpp_cont",
    "cifar10_ve_ncsnpp_deep_cont",
    "toy2d",
]


def _compose(*overrides: str):
    with initialize_config_module("scoresde.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_config_is_the_main_job():
    cfg = _compose()
    assert cfg.task.name == "train" and cfg.task.sample and cfg.task.likelihood
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.model._target_.endswith("UNet")
    assert cfg.sde._target_.endswith("VPSDE")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.trainer.max_steps == 8000 and cfg.trainer.max_time
    assert cfg.module.betas == [0.9, 0.999] and cfg.module.adam_eps == 1e-8
    validate_config(cfg)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_option_composes(group):
    for option in GROUPS[group]:
        cfg = _compose(f"{group}={option}")
        node = cfg[group]
        assert node is not None
        if group in ("sde", "solver", "model", "data"):
            assert "_target_" in node


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_sde_configs_instantiate(name):
    sde = instantiate(_compose(f"sde={name}").sde)
    assert type(sde).__name__.lower().replace("sde", "") == name


@pytest.mark.parametrize("name", GROUPS["solver"])
def test_solver_configs_instantiate_with_common_keys(name):
    """Every sampler takes ``eps``; those with a final Tweedie step take ``denoise`` (DPM-Solver, UniPC and
    EDM's Heun call it ``denoise_to_zero`` as their papers do; Heun's is its own last Euler step to
    sigma = 0)."""
    key = "denoise_to_zero" if name in ("dpm_solver", "heun", "unipc") else "denoise"
    cfg = _compose(f"solver={name}", "solver.eps=0.01", *([f"solver.{key}=false"] if key else []))
    solver = instantiate(cfg.solver)
    assert solver.eps == 0.01 and solver.denoise is False


def test_solver_configs_carry_the_papers_defaults():
    assert _compose("solver=em").solver.steps == 1000
    pc = _compose("solver=pc").solver
    assert (pc.predictor, pc.corrector, pc.snr, pc.corrector_steps, pc.steps) == (
        "reverse_diffusion",
        "langevin",
        0.16,
        1,
        1000,
    )
    ode = _compose("solver=ode").solver
    assert (ode.method, ode.rtol, ode.atol) == ("RK45", 1e-5, 1e-5)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_compose(name):
    cfg = _compose(f"experiment={name}")
    validate_config(cfg)
    if name.startswith("cifar10"):
        assert cfg.data._target_.endswith("CIFAR10DataModule") and cfg.data.random_flip
        assert (
            cfg.module.lr == 2e-4 and cfg.module.warmup_steps == 5000 and cfg.trainer.gradient_clip_val == 1.0
        )
        assert (
            cfg.trainer.max_steps == (950001 if "deep" in name else 1300001) and cfg.trainer.max_time is None
        )
        if "_ve_" in name:
            assert cfg.sde._target_.endswith("VESDE") and cfg.ema.decay == 0.999
            assert cfg.module.parameterization == "score" and cfg.module.loss.reduce == "sum"
            assert list(cfg.data.data_range) == [0.0, 1.0] and cfg.solver._target_.endswith(
                "PredictorCorrector"
            )
        else:
            assert cfg.ema.decay == 0.9999 and cfg.module.loss.reduce == "mean"
            assert cfg.solver._target_.endswith("EulerMaruyama")
        assert cfg.validation.solver == cfg.solver  # the paper's snapshot sampler


def test_experiment_is_overridable_from_the_command_line():
    cfg = _compose("experiment=cifar10_vp_ddpmpp_cont", "sde=subvp", "trainer=cpu", "module.lr=1e-4")
    assert (
        cfg.sde._target_.endswith("SubVPSDE") and cfg.trainer.accelerator == "cpu" and cfg.module.lr == 1e-4
    )


@pytest.mark.parametrize("group", ["sde", "solver", "trainer", "task", "model", "data"])
def test_unknown_option_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException) as err:
        _compose(f"{group}=nonexistent")
    message = str(err.value)
    assert "nonexistent" in message
    for option in GROUPS[group]:
        assert option in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=0", r"trainer\.max_steps=0: the number of training steps must be >= 1"),
        ("trainer.gradient_clip_val=-1", r"trainer\.gradient_clip_val=-1: must be >= 0"),
        ("trainer.val_check_interval=0", r"trainer\.val_check_interval=0: must be > 0"),
        ("solver.steps=0", r"solver: steps must be >= 1"),
        ("validation.solver.steps=0", r"validation\.solver: steps must be >= 1"),
        ("num_samples=0", r"num_samples=0: must be >= 1"),
        ("likelihood.rtol=-1e-3", r"likelihood: rtol must be > 0"),
    ],
)
def test_invalid_values_are_named(override, message):
    """The app's own keys and the cheap objects' settings (each checked by its constructor) are checked
    before a task starts; the network, the module and the trainer when the training task builds them
    (tests/test_app_errors.py)."""
    cfg = _compose(override)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_network_shape_follows_the_data():
    unet = plain(_compose("model=unet").model)
    assert adapt_network_config(unet, (3, 16, 16))["in_channels"] == 3
    assert adapt_network_config(unet, (3, 16, 16))["image_size"] == 16
    assert adapt_network_config(plain(_compose("model=mlp").model), (5,))["dim"] == 5
    with pytest.raises(ValueError, match="model=mlp"):
        adapt_network_config(unet, (2,))
    with pytest.raises(ValueError, match="model=unet"):
        adapt_network_config(plain(_compose("model=mlp").model), (1, 8, 8))


def test_hydra_config_is_complete():
    with initialize_config_module("scoresde.conf", version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert "${task.name}" in OmegaConf.to_yaml(cfg.hydra.run, resolve=False) or cfg.hydra.run.dir
    assert cfg.hydra.job.chdir is False


def test_logger_options(tmp_path):
    import importlib.util

    from scoresde.tasks.trainer import build_loggers

    assert [type(lg).__name__ for lg in build_loggers(_compose(), tmp_path)] == ["CSVLogger"]
    assert build_loggers(_compose("logger=none"), tmp_path) == []
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        names = [type(lg).__name__ for lg in build_loggers(_compose("logger=both"), tmp_path)]
        assert names == ["CSVLogger", "TensorBoardLogger"]
    else:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            build_loggers(_compose("logger=tensorboard"), tmp_path)
