"""Writing samples as PNG files (Pillow): image grids, and scatter plots for 2-D data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scoresde.quantization import quantize

__all__ = ["image_grid", "log_png_to_loggers", "save_samples_png", "scatter_image", "to_uint8_images",
           "with_title"]


def to_uint8_images(
    x: torch.Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Model-space images ``(N, C, H, W)`` -> ``uint8`` pixels ``(N, H, W, C)`` in ``[0, 255]``: quantize to
    the data's ``levels`` and stretch to 8 bits (17 grey levels -> 0, 16, ..., 255)."""
    k = quantize(x.float(), levels, data_range)
    pix = torch.round(k.double() * 255.0 / (levels - 1)).clamp(0, 255).to(torch.uint8)
    return pix.permute(0, 2, 3, 1).numpy()


def image_grid(pixels: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one ``(rows*(H+pad)+pad, ...)`` image, ``nrow`` per row
    (default: a near-square grid); each pixel enlarged ``scale`` times (nearest neighbour)."""
    n, h, w, c = pixels.shape
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = pixels[i]
    return grid


def scatter_image(points: torch.Tensor, size: int = 384, lim: float = 4.5) -> np.ndarray:
    """A 2-D point cloud ``(N, 2)`` as a ``(size, size, 1)`` uint8 image of ``[-lim, lim]^2`` (y up):
    white background, every occupied 2x2-pixel cell grey to black with the log of its count."""
    pts = points.detach().double().cpu().numpy()
    bins = max(1, size // 2)
    hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=bins, range=[[-lim, lim], [-lim, lim]])
    hist = np.log1p(hist[::-1])
    shade = np.where(hist > 0, 170.0 * (1.0 - hist / max(hist.max(), 1e-12)), 255.0)
    img = shade.repeat(2, axis=0).repeat(2, axis=1)
    return img.astype(np.uint8)[..., None]


def with_title(arr: np.ndarray, title: str) -> np.ndarray:
    """``(H, W, C)`` uint8 image with ``title`` written in black on a white band above it (Pillow's
    default font)."""
    from PIL import Image, ImageDraw

    band = Image.new("L", (arr.shape[1], 14), 255)
    ImageDraw.Draw(band).text((2, 1), title, fill=0)
    top = np.repeat(np.asarray(band)[..., None], arr.shape[-1], axis=-1)
    return np.concatenate([top, arr], axis=0)


def save_samples_png(
    x: torch.Tensor,
    path: str | Path,
    *,
    levels: int | None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    nrow: int | None = None,
    title: str | None = None,
) -> Path:
    """Save samples as a PNG: an image grid for ``(N, C, H, W)`` (quantized to ``levels``), a scatter plot
    for 2-D vectors ``(N, 2)``; ``title`` (e.g. ``"step 2000"``) in a band above it. Returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        pixels = to_uint8_images(x, levels or 256, data_range)
        scale = max(1, 64 // max(x.shape[-1], 1))  # make tiny images (8x8 digits) visible
        arr = image_grid(pixels, nrow=nrow, scale=scale)
    elif x.dim() == 2 and x.shape[1] == 2:
        arr = scatter_image(x)
    else:
        raise ValueError(f"cannot draw samples of shape {tuple(x.shape)}: expected (N, C, H, W) or (N, 2)")
    if title:
        arr = with_title(arr, title)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr)).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def log_png_to_loggers(loggers: list, key: str, path: str | Path, step: int) -> list[str]:
    """Log a PNG (e.g. a validation sample grid) as an image to each logger that takes images:
    TensorBoard (``add_image``) and Weights & Biases (``log_image``); others (CSV) are skipped, the file on
    disk being their record. Returns the names of the loggers that received it."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"))
    done = []
    for logger in loggers:
        name = type(logger).__name__
        if name == "TensorBoardLogger":
            logger.experiment.add_image(key, pixels, global_step=int(step), dataformats="HWC")
        elif name == "WandbLogger":
            logger.log_image(key=key, images=[pixels], step=int(step))
        else:
            continue
        done.append(name)
    return done
