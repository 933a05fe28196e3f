"""Linear measurement operators ``y = A x + sigma_y n`` for image restoration, each with its singular value
decomposition ``A = U diag(S) V^T`` applied as functions (the form DDRM and MCGdiff work in).

A :class:`LinearOperator` maps a batch ``x`` of shape ``(B, *in_shape)`` to ``(B, *out_shape)``. Its SVD:

* ``vt(x)``: the spectral coordinates ``V^T x``, shape ``(B, D)``; ``v(c)`` maps them back;
* ``ut(y)``: ``U^T y``, shape ``(B, M)``; ``u(c)`` maps back;
* ``singular_values``: ``S`` ``(r,)``, all positive; the first ``r`` spectral coordinates of ``x`` and ``y``
  are paired by them, the other ``D - r`` coordinates of ``x`` are the null space of ``A`` and the other
  ``M - r`` of ``y`` are pure noise.

So ``A x = u(pad(S * vt(x)[:, :r]))``, ``A^T y = v(pad(S * ut(y)[:, :r]))`` and the pseudo-inverse
``A^+ y = v(pad(ut(y)[:, :r] / S))``. Singular values below ``rcond * max(S)`` count as zero (the operator
is then the truncated one, within ``rcond`` of the exact ``A``).

Operators: :class:`Dense` (any ``(M, D)`` matrix), :class:`Mask` (inpainting), :class:`Identity`
(denoising), :class:`Colorization` (the gray channel of the paper's orthogonal decoupling),
:class:`Separable` (per channel ``R X C^T``; its SVD is the Kronecker product of the two factors' SVDs) and
its instances :class:`AveragePool` (super-resolution by ``k``), :class:`GaussianBlur` and
:class:`UniformBlur` (zero boundary, "same" size).
"""

from __future__ import annotations

import abc
import math

import torch

from ..conditional import colorization_transform

__all__ = [
    "LinearOperator", "Dense", "Mask", "Identity", "Colorization", "Separable", "AveragePool",
    "GaussianBlur", "UniformBlur",
]


class LinearOperator(abc.ABC):
    """``A: R^D -> R^M`` on batches, with its SVD as functions (see the module docstring)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    #: ``S``, the positive singular values (float64), paired with the first ``r`` spectral coordinates
    singular_values: torch.Tensor

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)

    @property
    def rank(self) -> int:
        return int(self.singular_values.numel())

    # --- the SVD --------------------------------------------------------------------------------
    @abc.abstractmethod
    def vt(self, x: torch.Tensor) -> torch.Tensor:
        """``V^T x``: ``(B, *in_shape) -> (B, D)``."""

    @abc.abstractmethod
    def v(self, c: torch.Tensor) -> torch.Tensor:
        """``V c``: ``(B, D) -> (B, *in_shape)``."""

    @abc.abstractmethod
    def ut(self, y: torch.Tensor) -> torch.Tensor:
        """``U^T y``: ``(B, *out_shape) -> (B, M)``."""

    @abc.abstractmethod
    def u(self, c: torch.Tensor) -> torch.Tensor:
        """``U c``: ``(B, M) -> (B, *out_shape)``."""

    def _s(self, like: torch.Tensor) -> torch.Tensor:
        return self.singular_values.to(device=like.device, dtype=like.dtype)

    @staticmethod
    def _pad(c: torch.Tensor, n: int) -> torch.Tensor:
        return torch.nn.functional.pad(c, (0, n - c.shape[1]))

    # --- A, A^T, A^+ --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``, shape ``(B, *out_shape)``."""
        self.check_input(x)
        r = self.rank
        return self.u(self._pad(self._s(x) * self.vt(x)[:, :r], self.out_dim))

    __call__ = forward

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``, shape ``(B, *in_shape)``."""
        self.check_measurement(y)
        r = self.rank
        return self.v(self._pad(self._s(y) * self.ut(y)[:, :r], self.in_dim))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """The pseudo-inverse ``A^+ y`` (least squares, least norm): the naive restoration."""
        self.check_measurement(y)
        r = self.rank
        return self.v(self._pad(self.ut(y)[:, :r] / self._s(y), self.in_dim))

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``A`` as a dense ``(M, D)`` matrix (small problems, tests, the oracle's posterior)."""
        eye = torch.eye(self.in_dim, dtype=dtype).reshape(self.in_dim, *self.in_shape)
        return self.forward(eye).reshape(self.in_dim, self.out_dim).T.contiguous()

    # --- checks ------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"{self!r} acts on data of shape {self.in_shape}, got a batch of shape "
                             f"{tuple(x.shape)}")

    def check_measurement(self, y: torch.Tensor) -> None:
        if tuple(y.shape[1:]) != self.out_shape:
            raise ValueError(f"{self!r} measures shape {self.out_shape}, got measurements of shape "
                             f"{tuple(y.shape)}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(in_shape={self.in_shape}, out_shape={self.out_shape}, "
                f"rank={self.rank})")


def _shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"the data shape must have positive sizes, got {shape}")
    return shape


def _rank(s: torch.Tensor, rcond: float) -> int:
    if not 0 <= float(rcond) < 1:
        raise ValueError(f"rcond must lie in [0, 1), got {rcond}")
    if s.numel() == 0 or float(s.max()) == 0:
        return 0
    return int((s > float(rcond) * s.max()).sum())


class Dense(LinearOperator):
    """Any ``(M, D)`` matrix acting on the flattened data (``in_shape`` defaults to ``(D,)``); SVD by
    LAPACK."""

    def __init__(self, matrix, in_shape=None, rcond: float = 1e-6):
        a = torch.as_tensor(matrix, dtype=torch.float64)
        if a.dim() != 2:
            raise ValueError(f"matrix must be 2-D (M, D), got shape {tuple(a.shape)}")
        self.in_shape = _shape(in_shape if in_shape is not None else (a.shape[1],))
        if self.in_dim != a.shape[1]:
            raise ValueError(f"a ({a.shape[0]}, {a.shape[1]}) matrix does not act on data of shape "
                             f"{self.in_shape} ({self.in_dim} values)")
        self.out_shape = (a.shape[0],)
        self.a = a
        u, s, vh = torch.linalg.svd(a, full_matrices=True)
        r = _rank(s, rcond)
        self._u, self._v, self.singular_values = u, vh.T, s[:r].clone()

    def forward(self, x):
        self.check_input(x)
        return x.reshape(x.shape[0], -1) @ self.a.to(x).T

    def vt(self, x):
        return x.reshape(x.shape[0], -1) @ self._v.to(x)

    def v(self, c):
        return (c @ self._v.to(c).T).reshape(c.shape[0], *self.in_shape)

    def ut(self, y):
        return y.reshape(y.shape[0], -1) @ self._u.to(y)

    def u(self, c):
        return c @ self._u.to(c).T


class _Permuted(LinearOperator):
    """``V`` a permutation of the flattened data: the spectral coordinates are ``x[perm]``."""

    perm: torch.Tensor

    def vt(self, x):
        return x.reshape(x.shape[0], -1)[:, self.perm.to(x.device)]

    def v(self, c):
        out = torch.empty_like(c)
        out[:, self.perm.to(c.device)] = c
        return out.reshape(c.shape[0], *self.in_shape)


class Mask(_Permuted):
    """Inpainting: ``A x = x[mask]``, the known values (shape ``(M,)``, in flattened order). ``mask`` is bool,
    True where known, broadcastable to ``shape`` (e.g. one ``(1, H, W)`` mask for every channel). Its SVD:
    ``V`` the permutation putting the known coordinates first, ``S = 1``, ``U = I``."""

    def __init__(self, mask, shape):
        self.in_shape = _shape(shape)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True where known), got {mask.dtype}")
        try:
            mask = mask.expand(self.in_shape).reshape(-1)
        except RuntimeError:
            raise ValueError(f"a mask of shape {tuple(mask.shape)} does not broadcast to the data shape "
                             f"{self.in_shape}") from None
        self.mask = mask
        known, unknown = mask.nonzero()[:, 0], (~mask).nonzero()[:, 0]
        self.perm = torch.cat([known, unknown])
        self.known = known
        self.out_shape = (int(known.numel()),)
        self.singular_values = torch.ones(known.numel(), dtype=torch.float64)

    def forward(self, x):
        self.check_input(x)
        return x.reshape(x.shape[0], -1)[:, self.known.to(x.device)]

    def ut(self, y):
        return y

    def u(self, c):
        return c


class Identity(_Permuted):
    """Denoising: ``A = I``."""

    def __init__(self, shape):
        self.in_shape = self.out_shape = _shape(shape)
        self.perm = torch.arange(self.in_dim)
        self.singular_values = torch.ones(self.in_dim, dtype=torch.float64)

    def forward(self, x):
        self.check_input(x)
        return x

    def vt(self, x):
        return x.reshape(x.shape[0], -1)

    def v(self, c):
        return c.reshape(c.shape[0], *self.in_shape)

    def ut(self, y):
        return y.reshape(y.shape[0], -1)

    def u(self, c):
        return c.reshape(c.shape[0], *self.out_shape)


class Colorization(LinearOperator):
    """Colorization: ``A x`` is the gray level ``(x_R + x_G + x_B) / sqrt 3`` of each pixel, the first row of
    the paper's orthogonal decoupling ``U_c`` (:func:`scoresde.conditional.colorization_transform`); shape
    ``(1, H, W)``. Its SVD: ``V^T = U_c`` over channels (gray first), ``S = 1``, ``U = I``."""

    def __init__(self, shape):
        self.in_shape = _shape(shape)
        if len(self.in_shape) != 3 or self.in_shape[0] != 3:
            raise ValueError(f"colorization needs 3-channel images (3, H, W), got shape {self.in_shape}")
        self.out_shape = (1, *self.in_shape[1:])
        self.transform = colorization_transform(torch.float64)
        self.singular_values = torch.ones(self.out_dim, dtype=torch.float64)

    def _mix(self, matrix, x):
        return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)

    def forward(self, x):
        self.check_input(x)
        return self._mix(self.transform[:1], x)

    def vt(self, x):
        return self._mix(self.transform, x).reshape(x.shape[0], -1)

    def v(self, c):
        return self._mix(self.transform.T, c.reshape(c.shape[0], *self.in_shape))

    def ut(self, y):
        return y.reshape(y.shape[0], -1)

    def u(self, c):
        return c.reshape(c.shape[0], *self.out_shape)


class Separable(LinearOperator):
    """``A X = R X C^T`` on every channel of images ``(C, H, W)``, ``R`` ``(H', H)``, ``C`` ``(W', W)``.

    With ``R = U_r S_r V_r^T`` and ``C = U_c S_c V_c^T``, ``A = U_r ⊗ U_c diag(S_r ⊗ S_c) (V_r ⊗ V_c)^T``: the
    spectral coordinates are ``V_r^T X V_c`` (and ``U_r^T Y U_c``), the singular value of entry ``(i, j)``
    is ``S_r[i] S_c[j]``; they are ordered largest first."""

    def __init__(self, rows, cols, shape, rcond: float = 1e-6):
        self.in_shape = _shape(shape)
        if len(self.in_shape) != 3:
            raise ValueError(f"a separable operator acts on images (C, H, W), got shape {self.in_shape}")
        ch, h, w = self.in_shape
        rows, cols = torch.as_tensor(rows, dtype=torch.float64), torch.as_tensor(cols, dtype=torch.float64)
        if rows.dim() != 2 or rows.shape[1] != h or cols.dim() != 2 or cols.shape[1] != w:
            raise ValueError(f"the factors ({tuple(rows.shape)}, {tuple(cols.shape)}) do not act on "
                             f"{h}x{w} images")
        self.rows, self.cols = rows, cols
        self.out_shape = (ch, rows.shape[0], cols.shape[0])
        ur, sr, vrh = torch.linalg.svd(rows, full_matrices=True)
        uc, sc, vch = torch.linalg.svd(cols, full_matrices=True)
        self._ur, self._vr, self._uc, self._vc = ur, vrh.T, uc, vch.T
        kr, kc = sr.numel(), sc.numel()
        s = (sr[:, None] * sc[None, :]).expand(ch, kr, kc)  # singular value of entry (c, i, j)
        r = _rank(s.reshape(-1), rcond)
        idx_c, idx_i, idx_j = torch.meshgrid(torch.arange(ch), torch.arange(kr), torch.arange(kc),
                                             indexing="ij")
        order = torch.argsort(s.reshape(-1), descending=True, stable=True)[:r]
        cs, is_, js = idx_c.reshape(-1)[order], idx_i.reshape(-1)[order], idx_j.reshape(-1)[order]
        self.singular_values = s.reshape(-1)[order].clone()
        self._perm_in = self._first(cs * h * w + is_ * w + js, self.in_dim)
        hh, ww = self.out_shape[1:]
        self._perm_out = self._first(cs * hh * ww + is_ * ww + js, self.out_dim)

    @staticmethod
    def _first(idx: torch.Tensor, n: int) -> torch.Tensor:
        rest = torch.ones(n, dtype=torch.bool)
        rest[idx] = False
        return torch.cat([idx, rest.nonzero()[:, 0]])

    @staticmethod
    def _both(left, right, x):
        return torch.einsum("ih,bchw,wj->bcij", left.to(x), x, right.to(x))

    def forward(self, x):
        self.check_input(x)
        return self._both(self.rows, self.cols.T, x)

    def _to_spectral(self, left, right, x, perm):
        """``(left^T X right)`` flattened, in the order ``perm`` (largest singular values first)."""
        return self._both(left.T, right, x).reshape(x.shape[0], -1)[:, perm.to(x.device)]

    def _from_spectral(self, left, right, c, perm, shape):
        out = torch.empty_like(c)
        out[:, perm.to(c.device)] = c
        return self._both(left, right.T, out.reshape(c.shape[0], *shape))

    def vt(self, x):
        return self._to_spectral(self._vr, self._vc, x, self._perm_in)

    def v(self, c):
        return self._from_spectral(self._vr, self._vc, c, self._perm_in, self.in_shape)

    def ut(self, y):
        return self._to_spectral(self._ur, self._uc, y, self._perm_out)

    def u(self, c):
        return self._from_spectral(self._ur, self._uc, c, self._perm_out, self.out_shape)


def _pool_matrix(n: int, k: int) -> torch.Tensor:
    """``(n / k, n)``: the mean of each block of ``k``."""
    block = torch.full((1, k), 1.0 / k, dtype=torch.float64)
    return torch.kron(torch.eye(n // k, dtype=torch.float64), block)


def _convolution_matrix(n: int, kernel: torch.Tensor) -> torch.Tensor:
    """``(n, n)``: "same"-size correlation with an odd, centred ``kernel``, zero outside the image."""
    half = kernel.numel() // 2
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None] + half  # column - row + half
    inside = (offset >= 0) & (offset < kernel.numel())
    return torch.where(inside, kernel[offset.clamp(0, kernel.numel() - 1)], 0.0)


def _blur_factors(kernel: torch.Tensor, shape):
    """``(R, C, shape)`` of a separable "same"-size blur of images ``shape = (C, H, W)``."""
    shape = _shape(shape)
    if len(shape) != 3:
        raise ValueError(f"blurring acts on images (C, H, W), got shape {shape}")
    return _convolution_matrix(shape[1], kernel), _convolution_matrix(shape[2], kernel), shape


class AveragePool(Separable):
    """Super-resolution: the mean of each ``k x k`` block (``(C, H, W) -> (C, H/k, W/k)``)."""

    def __init__(self, k: int, shape):
        shape = _shape(shape)
        k = int(k)
        if len(shape) != 3 or k < 1 or shape[1] % k or shape[2] % k:
            raise ValueError(f"average pooling by k={k} needs images (C, H, W) with H and W divisible by k, "
                             f"got shape {shape}")
        self.k = k
        super().__init__(_pool_matrix(shape[1], k), _pool_matrix(shape[2], k), shape)


class GaussianBlur(Separable):
    """Deblurring: a separable Gaussian blur of standard deviation ``sigma`` pixels, the kernel cut at
    ``radius`` (default ``ceil(3 sigma)``) and normalised to sum 1; zero outside the image."""

    def __init__(self, sigma: float, shape, radius: int | None = None, rcond: float = 1e-6):
        if not float(sigma) > 0:
            raise ValueError(f"the blur's sigma must be > 0 pixels, got {sigma}")
        self.sigma = float(sigma)
        radius = math.ceil(3 * self.sigma) if radius is None else int(radius)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (taps / self.sigma) ** 2)
        kernel = kernel / kernel.sum()
        super().__init__(*_blur_factors(kernel, shape), rcond=rcond)


class UniformBlur(Separable):
    """Deblurring: a separable box blur, the mean over ``size x size`` pixels (``size`` odd); zero outside."""

    def __init__(self, size: int, shape, rcond: float = 1e-6):
        size = int(size)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"the box blur's size must be odd and >= 1, got {size}")
        self.size = size
        kernel = torch.full((size,), 1.0 / size, dtype=torch.float64)
        super().__init__(*_blur_factors(kernel, shape), rcond=rcond)
