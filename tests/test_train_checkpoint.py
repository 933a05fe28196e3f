"""Checkpoints: atomic writes, resume at the same step with optimizer and EMA state, clear errors for
corrupt or mismatched files, a diverging run leaves the last good checkpoint untouched."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import shutil
import signal

import pytest
import torch

from scoresde.tasks import compose_config, run_task
from scoresde.train import (
    CheckpointError,
    ScoreModel,
    TrainingDivergedError,
    atomic_torch_save,
    load_score_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "experiment=toy2d",
    "data.n_train=512",
    "data.n_val=128",
    "data.n_test=128",
    "data.batch_size=64",
    "model.hidden=16",
    "model.depth=1",
    "model.embed_dim=16",
    "module.warmup_steps=2",
    "checkpoint.every_n_steps=3",
    "trainer.val_check_interval=1000",
    "task.sample=false",
    "task.likelihood=false",
    "progress_bar_refresh_rate=0",
    "logger=none",
    "trainer.enable_model_summary=false",
    "threads=1",
]


def _train(tmp, *overrides):
    return run_task(compose_config(*TINY, *overrides, output_dir=tmp))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run stopped at step 6 (checkpoints at 3 and 6)."""
    run = tmp_path_factory.mktemp("trained")
    metrics = _train(run, "trainer.max_steps=6")
    return run, metrics


def test_checkpoint_holds_ema_and_raw_weights(trained):
    run, metrics = trained
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6 and metrics["global_step"] == 6
    assert int(ckpt["averaging_state"]["n_averaged"]) == 7  # initial copy + 6 updates
    assert set(ckpt["state_dict"]) == set(ckpt["current_model_state"])
    assert any(
        not torch.equal(ckpt["state_dict"][k], ckpt["current_model_state"][k]) for k in ckpt["state_dict"]
    )
    model = load_score_model(run / "checkpoints" / "last.ckpt")
    for k, v in model.state_dict().items():  # inference weights = the EMA
        torch.testing.assert_close(v, ckpt["state_dict"][k])
    weights = torch.load(run / "weights_ema.pt", weights_only=False)
    for k, v in weights["state_dict"].items():
        torch.testing.assert_close(v, ckpt["state_dict"]["net." + k])
    assert not list(run.glob("checkpoints/*.tmp")) and not list(run.glob("checkpoints/.*"))


def test_resume_continues_at_the_same_step_with_optimizer_and_ema(trained, tmp_path, monkeypatch):
    run, _ = trained
    shutil.copytree(run, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    seen = {}

    def on_train_start(self):
        ema = next(cb for cb in self.trainer.callbacks if type(cb).__name__ == "EMA")
        seen["step"] = self.global_step
        seen["raw"] = {k: v.clone() for k, v in self.state_dict().items()}
        seen["ema"] = {k: v.clone() for k, v in ema.averaged_module().state_dict().items()}
        seen["n_averaged"] = int(ema._average_model.n_averaged)
        seen["adam"] = copy.deepcopy(self.trainer.optimizers[0].state_dict()["state"])
        seen["lr_epoch"] = self.trainer.lr_scheduler_configs[0].scheduler.last_epoch
        self._fit_start_step = int(self.global_step)

    monkeypatch.setattr(ScoreModel, "on_train_start", on_train_start)
    metrics = _train(tmp_path / "run", "trainer.max_steps=9", "ckpt_path=last")
    assert seen["step"] == 6 and metrics["start_step"] == 6 and metrics["global_step"] == 9
    for k, v in saved["current_model_state"].items():
        torch.testing.assert_close(seen["raw"][k], v)
    for k, v in saved["state_dict"].items():
        torch.testing.assert_close(seen["ema"][k], v)
    assert seen["n_averaged"] == 7 and seen["lr_epoch"] == 6
    for i, state in saved["optimizer_states"][0]["state"].items():
        torch.testing.assert_close(seen["adam"][i]["exp_avg"], state["exp_avg"])
        assert float(seen["adam"][i]["step"]) == 6
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 9 and int(final["averaging_state"]["n_averaged"]) == 10
    assert float(final["optimizer_states"][0]["state"][0]["step"]) == 9


def test_ckpt_path_last_without_a_checkpoint_says_how_to_resume(tmp_path):
    with pytest.raises(CheckpointError, match=r"hydra\.run\.dir=.*ckpt_path=last"):
        _train(tmp_path, "trainer.max_steps=2", "ckpt_path=last")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path, damage):
    run, _ = trained
    bad = tmp_path / "bad.ckpt"
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    bad.write_bytes(b"not a checkpoint" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        _train(tmp_path / "out", "trainer.max_steps=9", f"ckpt_path={bad}")
    with pytest.raises(CheckpointError, match="corrupt"):
        run_task(compose_config("task=sample", f"ckpt_path={bad}", output_dir=tmp_path / "s"))


def test_mismatched_checkpoint_is_a_clear_error(trained, tmp_path):
    run, _ = trained
    ckpt = run / "checkpoints" / "last.ckpt"
    # the differing setting itself is named (issue 22: every differing key, before the weights' shapes)
    with pytest.raises(CheckpointError, match=r"\n  net\.hidden: \d+ in the checkpoint, 8 now"):
        _train(tmp_path, "trainer.max_steps=9", f"ckpt_path={ckpt}", "model.hidden=8")
    with pytest.raises(CheckpointError, match="not found"):
        _train(tmp_path, "trainer.max_steps=9", f"ckpt_path={tmp_path / 'missing.ckpt'}")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from scoresde.nets import MLP

    calls = {"n": 0}
    forward = MLP.forward

    def poisoned(self, x, c):
        calls["n"] += 1
        out = forward(self, x, c)
        return out * math.nan if calls["n"] > 1 else out  # the resumed run starts at step 6; step 7 goes bad

    _train(tmp_path, "trainer.max_steps=6")  # a first healthy run: checkpoints at 3 and 6
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = _digest(last)
    (tmp_path / "metrics.json").unlink()
    monkeypatch.setattr(MLP, "forward", poisoned)
    with pytest.raises(TrainingDivergedError) as err:
        _train(tmp_path, "trainer.max_steps=20", "ckpt_path=last")  # resumes at 6; step 7 is NaN
    message = str(err.value)
    assert "diverged at step 7" in message and str(last) in message and "nan" in message.lower()
    assert _digest(last) == before  # not overwritten
    assert not (tmp_path / "metrics.json").exists()


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "x.ckpt"
    atomic_torch_save({"a": torch.zeros(3)}, path)
    before = _digest(path)

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    from scoresde.train.checkpoint import CheckpointWriteError

    with pytest.raises(CheckpointWriteError, match=r"could not write .*x\.ckpt: disk full \(the last good"):
        atomic_torch_save({"a": torch.ones(3)}, path)
    assert _digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]


class _SignalledWhilePickled:
    """Sends this process SIGUSR2 while ``torch.save`` pickles it (then pickles as the int 7)."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGUSR2)
        return (int, (7,))


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_a_signal_during_a_save_is_handled_after_the_complete_save(tmp_path):
    """submitit's requeue handler (SIGUSR2 on SLURM) calls sys.exit; raised inside torch.save it surfaced as
    torch's RuntimeError "unexpected pos" and failed the requeued job. The handler now runs after the save,
    which is complete on disk by then."""
    path = tmp_path / "last.ckpt"
    seen = []

    def requeue_handler(signum, frame):
        seen.append(path.is_file())
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeue_handler)
    try:
        with pytest.raises(SystemExit):
            atomic_torch_save({"w": torch.arange(10_000), "x": _SignalledWhilePickled()}, path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [True]  # the handler ran once, after the file was in place
    saved = torch.load(path, weights_only=False)  # our own file; `int` is not on weights_only's list
    assert saved["x"] == 7 and torch.equal(saved["w"], torch.arange(10_000))
    assert signal.getsignal(signal.SIGUSR2) is previous
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
