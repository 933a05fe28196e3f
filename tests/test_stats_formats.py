"""FID statistics files other tools write and read: the paper's ``cifar10_stats.npz`` (``pool_3``
activations), pytorch-fid's ``mu``/``sigma`` ``.npz``, and ours (which carries both tools' keys)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scoresde.evaluation.fid import fid_from_features
from scoresde.evaluation.stats import ReferenceStats, load_fid_statistics


def _features(n: int, f: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(f, f, generator=g, dtype=torch.float64) / f**0.5
    return (torch.randn(n, f, generator=g, dtype=torch.float64) @ mix + shift).float()


def _ours(features: torch.Tensor, **kw) -> ReferenceStats:
    return ReferenceStats.from_features(
        features, name="ref", feature_name="net", fingerprint="fp", data_hash="ab" * 32, **kw
    )


def test_our_file_is_read_by_pytorch_fid_and_the_paper(tmp_path):
    ref = _ours(_features(300, 16, 0))
    path = ref.save(tmp_path / "ours.npz")
    with np.load(path) as f:  # pytorch-fid's reader: m, s = f["mu"][:], f["sigma"][:]
        mu, sigma = f["mu"][:], f["sigma"][:]
        pool_3 = f["pool_3"]  # the paper's reader: stats["pool_3"], the activations
    np.testing.assert_allclose(mu, ref.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma, ref.cov.numpy(), rtol=1e-10)
    np.testing.assert_allclose(np.cov(pool_3.astype(np.float64), rowvar=False), sigma, rtol=1e-5, atol=1e-7)
    # a KID subset smaller than the reference is not the whole activation set: no pool_3 then
    partial = _ours(_features(300, 16, 0), max_kid_features=100).save(tmp_path / "partial.npz")
    with np.load(partial) as f:
        assert "pool_3" not in f.files and "mu" in f.files
    # and our own loader still reads it
    assert load_fid_statistics(path).num_samples == 300


def test_the_three_formats_give_the_same_fid(tmp_path):
    real, fake = _features(400, 12, 1), _features(200, 12, 2, shift=0.3)
    ours = _ours(real)
    expected = fid_from_features(ours, fake)
    assert expected > 0.1
    np.savez(tmp_path / "cifar10_stats.npz", pool_3=real.numpy())  # the paper's layout
    np.savez(tmp_path / "fid_stats.npz", mu=ours.mean.numpy(), sigma=ours.cov.numpy())  # pytorch-fid's
    ours.save(tmp_path / "ours.npz")
    for name in ("cifar10_stats.npz", "fid_stats.npz", "ours.npz"):
        stats = load_fid_statistics(tmp_path / name)
        assert fid_from_features(stats, fake) == pytest.approx(expected, rel=1e-6), name
    assert load_fid_statistics(tmp_path / "cifar10_stats.npz").num_samples == 400


def test_a_file_without_statistics_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "x.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match=r"no FID statistics.*mu/sigma.*pool_3"):
        load_fid_statistics(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"sigma has shape"):
        load_fid_statistics(tmp_path / "y.npz")
