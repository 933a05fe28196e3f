"""``task=evaluate`` end to end on tiny runs: toy2d (sliced W2 / MMD against fresh data, with the floor) and
digits (FID / KID / IS in the shipped classifier's feature space over seed sets, memorisation, bits/dim,
the reference-statistics cache, and the comparison of two runs against their spread)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_app_run import TOY

from scoresde.tasks import compose_config, run_task
from scoresde.tasks.common import SEED_STRIDE, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("toy")
    run_task(compose_config(*TOY, "trainer.max_steps=30", "trainer.val_check_interval=30", output_dir=run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits")
    run_task(
        compose_config(
            "threads=1",
            "trainer.max_steps=4",
            "trainer.val_check_interval=4",
            "validation.bpd_examples=0",
            "validation.num_samples=4",
            "validation.solver.steps=2",
            "solver.steps=2",
            "num_samples=2",
            "likelihood.num_examples=2",
            "progress_bar_refresh_rate=0",
            "logger=none",
            output_dir=run,
        )
    )
    return run / "checkpoints" / "last.ckpt"


def _evaluate(ckpt, out, *extra):
    return run_task(compose_config("task=evaluate", "threads=1", f"ckpt_path={ckpt}", *extra, output_dir=out))


def test_evaluate_toy_run_reports_distances_against_fresh_data_and_their_floor(toy_ckpt, tmp_path):
    m = _evaluate(
        toy_ckpt,
        tmp_path,
        "data=toy2d",
        "experiment=toy2d",
        "solver.steps=20",
        "num_samples=200",
        "task.seed_sets=2",
        "likelihood.num_examples=4",
        "likelihood.rtol=1e-2",
        "likelihood.atol=1e-2",
        "model.hidden=32",
        "model.depth=2",
        "model.embed_dim=16",
    )
    q = m["quality"]
    assert len(q["sliced_w2"]["values"]) == 2 and q["sliced_w2"]["std"] is not None
    # 30 training steps of a tiny MLP: far from the data, well above what two fresh draws score
    assert q["sliced_w2"]["mean"] > q["sliced_w2_floor"]["mean"] > 0
    assert q["mmd"]["mean"] > q["mmd_floor"]["mean"]
    assert math.isfinite(m["likelihood"]["nll_nats"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["sampling"]["seed_sets"] == 2 and saved["sampling"]["num_samples"] == 400
    assert (tmp_path / "samples.png").is_file()
    assert torch.load(tmp_path / "samples.pt", weights_only=False)["seeds"][:2] == [0, 1]


def test_evaluate_digits_fid_kid_is_over_seed_sets(digits_ckpt, tmp_path):
    stats = tmp_path / "stats"
    common = (
        "solver.steps=5",
        "num_samples=40",
        "task.seed_sets=2",
        f"task.stats_dir={stats}",
        "task.kid_subset_size=20",
        "task.kid_subsets=5",
        "likelihood.num_examples=3",
    )
    m = _evaluate(digits_ckpt, tmp_path / "a", *common)
    q = m["quality"]
    assert q["feature_network"] == "digits" and q["reference"] == {
        "name": "digits-train",
        "split": "train",
        "num_images": 1500,
    }
    for key in ("fid", "kid", "inception_score"):
        assert len(q[key]["values"]) == 2 and all(math.isfinite(v) for v in q[key]["values"]), key
    # 4 training steps: noise, not digits -- far worse than the real test images against the same reference
    assert q["fid"]["mean"] > 5 * q["data_floor"]["fid"] and q["data_floor"]["num_images"] == 297
    assert 0.0 <= q["memorization"]["fraction"] <= 1.0 and q["memorization"]["expected"] == 0.05
    assert len(q["confidence"]["class_histogram"]) == 10
    assert math.isfinite(m["likelihood"]["bpd"]) and m["likelihood"]["num_examples"] == 3
    # the reference statistics were cached and are reused (not rewritten) by the next run
    (cached,) = stats.glob("digits-train__*.npz")
    before = cached.stat().st_mtime_ns
    other = _evaluate(
        digits_ckpt,
        tmp_path / "b",
        *common,
        "seed=1",
        "task.likelihood=false",
        f"task.compare_to={tmp_path / 'a' / 'metrics.json'}",
    )
    assert cached.stat().st_mtime_ns == before
    assert other["sampling"]["samples_per_set"] == 40
    c = other["comparison"]["fid"]
    assert c["within"] == (abs(c["difference"]) <= c["spread"])
    assert ("cannot be ranked" in c["message"]) == c["within"]
    assert "likelihood" not in other


def test_evaluate_takes_reference_statistics_from_a_file(digits_ckpt, tmp_path):
    """task.reference_stats: pytorch-fid's mu/sigma give the same FID as the computed reference (KID needs
    the features, so it is left out); a file of another width is a clear error."""
    import numpy as np

    from scoresde.evaluation import load_fid_statistics

    stats = tmp_path / "stats"
    common = ("solver.steps=5", "num_samples=30", "task.seed_sets=2", "task.likelihood=false",
              "task.kid_subset_size=10", "task.kid_subsets=3", "task.data_floor=false")
    computed = _evaluate(digits_ckpt, tmp_path / "a", *common, f"task.stats_dir={stats}")["quality"]
    (cached,) = stats.glob("digits-train__*.npz")
    ref = load_fid_statistics(cached)
    np.savez(tmp_path / "fid_stats.npz", mu=ref.mean.numpy(), sigma=ref.cov.numpy())  # pytorch-fid's layout
    fromfile = _evaluate(digits_ckpt, tmp_path / "b", *common,
                         f"task.reference_stats={tmp_path / 'fid_stats.npz'}")["quality"]
    np.testing.assert_allclose(fromfile["fid"]["values"], computed["fid"]["values"], rtol=1e-6)
    assert "kid" not in fromfile and "KID" in fromfile["note"]
    np.savez(tmp_path / "narrow.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ConfigError, match=r"reference_stats=.*3 features per image"):
        _evaluate(digits_ckpt, tmp_path / "c", *common, f"task.reference_stats={tmp_path / 'narrow.npz'}")


def test_evaluate_set_zero_is_what_task_sample_draws(digits_ckpt, tmp_path):
    _evaluate(
        digits_ckpt,
        tmp_path / "e",
        "solver.steps=3",
        "num_samples=6",
        "task.seed_sets=2",
        f"task.stats_dir={tmp_path}",
        "task.likelihood=false",
        "task.kid_subset_size=3",
    )
    run_task(
        compose_config(
            "task=sample",
            "threads=1",
            f"ckpt_path={digits_ckpt}",
            "solver.steps=3",
            "num_samples=6",
            output_dir=tmp_path / "s",
        )
    )
    e = torch.load(tmp_path / "e" / "samples.pt", weights_only=False)
    s = torch.load(tmp_path / "s" / "samples.pt", weights_only=False)
    assert e["seeds"] == s["seeds"] == list(range(6))
    torch.testing.assert_close(e["samples"], s["samples"], rtol=1e-4, atol=1e-4)


def test_evaluate_seed_sets_are_disjoint():
    from scoresde.tasks.evaluate import evaluation_seed_sets

    sets = evaluation_seed_sets(3, 4, seed=2)
    assert sets[0][0] == 2 * SEED_STRIDE and sets[2][-1] == 2 * SEED_STRIDE + 11
    assert len({s for group in sets for s in group}) == 12
    assert evaluation_seed_sets(3, 4, seed=0, explicit=[5, 9]) == [[5, 9]]


@pytest.mark.parametrize(
    ("override", "key"),
    [("task.seed_sets=0", "task.seed_sets"), ("task.memorization_percentile=100", "memorization_percentile")],
)
def test_evaluate_invalid_values_are_named(digits_ckpt, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        _evaluate(digits_ckpt, tmp_path, override)


def test_evaluate_missing_inception_weights_says_where_to_put_them(digits_ckpt, tmp_path, monkeypatch):
    from scoresde.evaluation import WeightsNotFoundError

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="pt_inception"):
        _evaluate(
            digits_ckpt,
            tmp_path / "e",
            "task.feature_network=inception",
            "solver.steps=2",
            "num_samples=4",
            "task.likelihood=false",
            f"task.feature_weights={tmp_path / 'nowhere' / 'pt_inception-2015-12-05.pth'}",
        )
