"""Discrete data <-> model space, and the bits/dim conversion (hand-computed cases)."""

import math

import pytest
import torch

from scoresde.quantization import bits_per_dim_from_logp, check_integer_data, dequantize, quantize


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_uniform_density_over_the_range_gives_log2_levels(levels, data_range):
    lo, hi = data_range
    d = 64
    logp = torch.full((3,), -d * math.log(hi - lo), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim_from_logp(logp, d, levels, data_range),
                               torch.full((3,), math.log2(levels), dtype=torch.float64))


def test_hand_computed_cases():
    # levels 256 on [-1, 1]: -logp/(D ln 2) + 7 (the paper's offset); on [0, 1]: + 8
    logp = torch.tensor([-100.0 * math.log(2)], dtype=torch.float64)
    assert bits_per_dim_from_logp(logp, 10, 256, (-1, 1)).item() == pytest.approx(10 + 7)
    assert bits_per_dim_from_logp(logp, 10, 256, (0, 1)).item() == pytest.approx(10 + 8)
    # levels 17 on [-1, 1]: + log2(17/2); on [0, 1]: + log2(17)
    assert bits_per_dim_from_logp(logp, 10, 17, (-1, 1)).item() == pytest.approx(10 + math.log2(8.5))
    assert bits_per_dim_from_logp(logp, 10, 17, (0, 1)).item() == pytest.approx(10 + math.log2(17))


def test_dequantize_quantize_round_trip_and_range():
    k = torch.arange(17).repeat(100)
    for rng in ((-1.0, 1.0), (0.0, 1.0)):
        x = dequantize(k, 17, rng, generator=torch.Generator().manual_seed(0))
        assert x.min() >= rng[0] and x.max() < rng[1]
        assert torch.equal(quantize(x, 17, rng), k)
        assert torch.equal(quantize(dequantize(k, 17, rng, "none"), 17, rng), k)
    # bin width: uniform dequantization fills each cell [k, k+1) / levels
    zeros = torch.zeros(10000, dtype=torch.long)
    x = dequantize(zeros, 4, (0.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert 0.0 <= x.min() and x.max() < 0.25 and abs(x.mean().item() - 0.125) < 0.005


def test_integer_data_checks():
    check_integer_data(torch.tensor([0, 16], dtype=torch.uint8), 17)
    with pytest.raises(ValueError, match=r"must lie in \[0, 17\) but spans \[0, 17\]"):
        check_integer_data(torch.tensor([0, 17]), 17)
    with pytest.raises(ValueError, match="non-integer"):
        check_integer_data(torch.tensor([0.5]), 17)
    with pytest.raises(ValueError, match="NaN"):
        check_integer_data(torch.tensor([float("nan")]), 17)
    with pytest.raises(ValueError, match="valid: 'uniform', 'none'"):
        dequantize(torch.tensor([1]), 4, dequantization="gauss")
