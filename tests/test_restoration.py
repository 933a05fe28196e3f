"""Image restoration against exact answers: the operators' adjoints and SVDs, the oracle's posterior of a
linear-Gaussian measurement against Bayes' rule on a grid, and the posterior samplers against exact posterior
draws of the Gaussian-mixture oracle."""

import pytest
import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.restoration import (
    AveragePool,
    Colorization,
    Dense,
    GaussianBlur,
    Identity,
    Mask,
    UniformBlur,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


OPERATORS = {
    "dense": lambda: Dense(torch.randn(3, 5, generator=_gen(1), dtype=torch.float64)),
    "dense_rank2": lambda: Dense(torch.randn(6, 2, generator=_gen(2), dtype=torch.float64).repeat(1, 2)),
    "mask": lambda: Mask(torch.rand(1, 4, 6, generator=_gen(3)) < 0.5, (2, 4, 6)),
    "identity": lambda: Identity((2, 3, 3)),
    "colorization": lambda: Colorization((3, 4, 4)),
    "pool": lambda: AveragePool(2, (2, 4, 6)),
    "gaussian_blur": lambda: GaussianBlur(1.0, (1, 8, 8)),
    "uniform_blur": lambda: UniformBlur(3, (2, 5, 7)),
}


def _columns(fn, n):
    """The matrix whose columns are ``fn`` of the unit vectors."""
    return fn(torch.eye(n, dtype=torch.float64)).reshape(n, -1).T


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_adjoint_and_svd(name):
    op = OPERATORS[name]()
    x = torch.randn(4, *op.in_shape, dtype=torch.float64, generator=_gen(4))
    y = torch.randn(4, *op.out_shape, dtype=torch.float64, generator=_gen(5))
    # <A x, y> = <x, A^T y>
    torch.testing.assert_close((op(x) * y).sum(), (x * op.adjoint(y)).sum())
    # U and V orthogonal, U diag(S) V^T = A, A^+ the pseudo-inverse
    u, v, r = _columns(op.u, op.out_dim), _columns(op.v, op.in_dim), op.rank
    torch.testing.assert_close(u.T @ u, torch.eye(op.out_dim, dtype=torch.float64))
    torch.testing.assert_close(v.T @ v, torch.eye(op.in_dim, dtype=torch.float64))
    assert (op.singular_values > 0).all()
    a = op.matrix()
    torch.testing.assert_close(u[:, :r] @ torch.diag(op.singular_values) @ v[:, :r].T, a)
    torch.testing.assert_close(op.vt(op.v(x.reshape(4, -1))), x.reshape(4, -1))
    expected = y.reshape(4, -1) @ torch.linalg.pinv(a, rtol=1e-6).T
    torch.testing.assert_close(op.pinv(y).reshape(4, -1), expected, rtol=1e-6, atol=1e-8)


def test_operators_compute_what_they_say():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    torch.testing.assert_close(AveragePool(2, (2, 4, 6))(x), torch.nn.functional.avg_pool2d(x, 2))
    blur = GaussianBlur(1.0, (2, 4, 6))
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0, dtype=torch.float64) ** 2)
    k = k / k.sum()
    conv = torch.nn.functional.conv2d(x.reshape(2, 1, 4, 6), (k[:, None] * k[None, :])[None, None], padding=3)
    torch.testing.assert_close(blur(x), conv.reshape(1, 2, 4, 6))
    box = torch.nn.functional.conv2d(x.reshape(2, 1, 4, 6), torch.full((1, 1, 3, 3), 1 / 9.0,
                                                                       dtype=torch.float64), padding=1)
    torch.testing.assert_close(UniformBlur(3, (2, 4, 6))(x), box.reshape(1, 2, 4, 6))
    rgb = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(Colorization((3, 2, 2))(rgb), rgb.sum(1, keepdim=True) / 3**0.5)
    mask = torch.tensor([[True, False], [False, True]])
    torch.testing.assert_close(Mask(mask, (1, 2, 2))(rgb[:, :1]), rgb[:, 0][:, mask])


def test_operator_bad_input():
    with pytest.raises(ValueError, match="divisible by k"):
        AveragePool(3, (1, 8, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        Mask(torch.ones(3, dtype=torch.bool), (1, 2, 2))
    with pytest.raises(ValueError, match="bool"):
        Mask(torch.ones(2, 2), (1, 2, 2))
    with pytest.raises(ValueError, match="3-channel"):
        Colorization((1, 4, 4))
    with pytest.raises(ValueError, match="acts on data of shape"):
        AveragePool(2, (1, 8, 8))(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="measures shape"):
        AveragePool(2, (1, 8, 8)).pinv(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianBlur(0.0, (1, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        UniformBlur(2, (1, 8, 8))


# --- the oracle's posterior ----------------------------------------------------------------------------
def test_posterior_matches_bayes_on_a_grid():
    """p(x | y) ∝ p(x) N(y; A x, sigma^2): the posterior's density against the normalised product on a
    2-D grid, for an ill-posed (rank 1) A with two rows."""
    sde, gm = VPSDE(), GaussianMixture.random(2, 3, spread=0.8, seed=0)
    a = torch.tensor([[1.0, 0.5], [2.0, 1.0]], dtype=torch.float64)
    y, sigma = torch.tensor([0.4, 0.7], dtype=torch.float64), 0.3
    post = gm.posterior(a, y, sigma)
    grid = torch.linspace(-4, 4, 801, dtype=torch.float64)
    xs = torch.cartesian_prod(grid, grid)
    log_joint = gm.log_prob(xs, 0.0, sde) - 0.5 * ((xs @ a.T - y) ** 2).sum(1) / sigma**2
    joint = log_joint.exp().reshape(801, 801)
    z = torch.trapezoid(torch.trapezoid(joint, grid, dim=1), grid)
    torch.testing.assert_close(post.log_prob(xs, 0.0, sde).exp(), joint.reshape(-1) / z, rtol=1e-5, atol=1e-8)


def test_noiseless_posterior_is_the_conditional_in_the_svd_basis():
    """sigma_y = 0: the posterior lies on {A x = y}; in V's basis it is the exact conditional of the rotated
    prior given the measured coordinates."""
    gm = GaussianMixture.random(4, 3, seed=1)
    op = Dense(torch.randn(3, 2, generator=_gen(6), dtype=torch.float64).repeat(1, 2))  # rank 2 of 4
    x = gm.sample(1, 0.0, VPSDE(), generator=_gen(7), dtype=torch.float64)
    y = op(x)
    post = gm.posterior(op, y, 0.0)
    v = _columns(op.v, 4)
    c = op.vt(x)[0]
    cond = gm.transformed(v.T).condition(c, torch.arange(4) < 2)
    draws = post.sample(200_000, 0.0, VPSDE(), generator=_gen(8), dtype=torch.float64)
    torch.testing.assert_close(op(draws), y.expand(200_000, 3), rtol=0, atol=1e-6)  # on {A x = y}
    mean, cov = post.moments(0.0, VPSDE())
    cmean, ccov = cond.moments(0.0, VPSDE())
    torch.testing.assert_close((v.T @ mean)[2:], cmean)
    torch.testing.assert_close((v.T @ cov @ v)[2:, 2:], ccov)
    torch.testing.assert_close(post.weights, cond.weights)
