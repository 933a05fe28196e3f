"""Samples -> the integer form of the data, before any feature is computed; the samples ``.npz`` file.

Generated images are quantized exactly like the data: a model-space sample ``x`` in ``data_range`` becomes
the bin index :func:`scoresde.quantization.quantize` gives (the inverse of the dequantization the data
went through), stored as ``uint8``. Integer input is only checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scoresde.quantization import check_integer_data, quantize

__all__ = ["read_samples_npz", "to_pixels", "to_uint8", "write_samples_folder", "write_samples_npz"]


def to_uint8(
    samples: torch.Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)
) -> torch.Tensor:
    """``uint8`` integers in ``[0, levels)`` from model-space float samples (quantized with
    :func:`~scoresde.quantization.quantize`) or from integer samples (checked, converted).

    Raises ``ValueError`` for NaN/inf samples (naming how many), for integers outside ``[0, levels)`` and
    for ``levels`` above 256.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if not 2 <= int(levels) <= 256:
        raise ValueError(f"levels must lie in [2, 256] to be stored as uint8, got {levels}")
    if samples.is_floating_point():
        finite = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1) if samples.dim() else None
        if finite is not None and not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{bad} of {len(samples)} samples contain NaN or inf values; the sampler diverged. "
                "Drop or regenerate them (and report how many) before computing metrics"
            )
        return quantize(samples, int(levels), data_range).to(torch.uint8)
    check_integer_data(samples, int(levels))
    return samples.to(torch.uint8)


def to_pixels(
    samples: torch.Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Model-space images ``(N, C, H, W)`` -> ``uint8`` pixels ``(N, H, W, C)`` in ``0..255`` (the layout
    image tools and the paper's code use): quantized to the data's ``levels``, then stretched to 8 bits
    (``k * 255 / (levels - 1)``, so 256 levels stay as they are and 17 grey levels become 0, 16, ..., 255)."""
    if samples.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(samples.shape)}")
    k = to_uint8(samples, levels, data_range).double()
    pix = torch.round(k * 255.0 / (int(levels) - 1)).clamp(0, 255).to(torch.uint8)
    return pix.permute(0, 2, 3, 1).contiguous().numpy()


def write_samples_npz(
    path: str | Path,
    samples: torch.Tensor,
    *,
    levels: int | None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    seeds: list[int] | None = None,
) -> Path:
    """Write samples as the paper's code does: key ``samples`` holds ``uint8`` ``(N, H, W, C)`` pixels in
    ``0..255`` for images (what FID tools and the reference's ``samples_*.npz`` readers expect). The
    extras: ``samples_model`` (``float32``, ``(N, C, H, W)``, model space), ``samples_int`` (the quantized
    integers in ``[0, levels)``), ``seeds`` (per-sample seeds), ``levels``, ``data_range``. Continuous data
    (the 2-D toys) have no pixel form: ``samples`` is then the ``float32`` ``(N, D)`` array. Atomic."""
    x = samples.detach().cpu()
    arrays: dict[str, np.ndarray] = {"samples_model": x.numpy().astype(np.float32)}
    if levels is not None and x.dim() == 4:
        arrays["samples"] = to_pixels(x, levels, data_range)
        arrays["samples_int"] = to_uint8(x, levels, data_range).numpy()
        arrays["levels"] = np.int64(levels)
    else:
        arrays["samples"] = arrays.pop("samples_model")
    arrays["data_range"] = np.asarray(data_range, dtype=np.float64)
    if seeds is not None:
        arrays["seeds"] = np.asarray(seeds, dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def write_samples_folder(
    folder: str | Path,
    samples: torch.Tensor,
    *,
    levels: int,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> list[Path]:
    """One PNG per image sample, ``<folder>/000000.png``, ``000001.png``, ... (greyscale for one channel,
    RGB for three): the folder layout that pytorch-fid, clean-fid and torch-fidelity read. The pixels are
    those of the ``.npz``'s ``samples`` array (:func:`to_pixels`). A folder that already holds PNG files is
    an error (nothing is overwritten). Returns the paths."""
    from PIL import Image

    folder = Path(folder)
    if folder.is_dir() and any(folder.glob("*.png")):
        raise FileExistsError(f"{folder} already holds PNG files; choose another run directory")
    pixels = to_pixels(samples.detach().cpu(), levels, data_range)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(pixels) - 1)))
    paths = []
    for i, img in enumerate(pixels):
        path = folder / f"{i:0{width}d}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path, format="PNG")
        paths.append(path)
    return paths


def read_samples_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a samples ``.npz`` (ours or the paper's ``samples_*.npz``, whose only key is
    ``samples``), without unpickling."""
    with np.load(Path(path), allow_pickle=False) as z:
        if "samples" not in z:
            raise ValueError(f"{path}: no 'samples' array (keys: {sorted(z.files)})")
        return {k: z[k] for k in z.files}
