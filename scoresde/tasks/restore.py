"""Image restoration in the app: ``condition=superres|deblur|denoise|sdedit``, and
``condition=inpaint|colorize`` with ``sigma_y > 0`` or a restoration method
(:mod:`scoresde.restoration` does the math).

The measurement is ``y = A x + sigma_y n`` of the first ``num_images`` test images (or the PNGs of the
folder ``condition.input``), ``n`` drawn with ``seed``; or ``condition.measurement``, a ``.pt``/``.npy`` file
of measurements ``(N, *A's output shape)`` (then the originals are unknown and no distances are reported).
``A``: ``superres`` the mean of ``factor x factor`` blocks; ``deblur`` a Gaussian (``blur_sigma`` pixels) or
uniform (``blur_size``) blur; ``denoise`` the identity; ``inpaint`` the known pixels of the mask;
``colorize`` the gray level. ``condition=sdedit`` damages with the operator of ``condition.damage``.

Methods (``condition.method``; ``task=evaluate``: or a list): ``smc`` (MCGdiff, ``particles`` per row),
``dps`` (``step_size``), ``pigdm`` (``weight``), ``sdedit`` (from ``A^+ y`` at ``t0``) and ``pinv`` (the
naive ``A^+ y``). Per image ``per_image`` restorations; the grid's rows: original, measurement (shown as
``A^+ y``), restorations. Outputs: ``condition.png``, ``condition.pt``, ``samples.npz`` (the restorations)
and the metrics: PSNR and SSIM against the original (images in [0, 1]) and the measurement consistency
``||y - A x|| / (sigma_y sqrt(M))`` (about 1 for a draw of the posterior; at ``sigma_y = 0`` the RMS residual
``||y - A x|| / sqrt(M)``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from scoresde.evaluation.samples import write_samples_npz
from scoresde.restoration import AveragePool, Colorization, GaussianBlur, Identity, Mask, UniformBlur
from scoresde.restoration.samplers import check_solver, dps, mcgdiff, pigdm, sdedit
from scoresde.train.distributed import is_global_zero

from .common import ConfigError, datamodule_from_config, per_item_seeds, show_progress
from .condition_inputs import make_mask, test_images, values_of

__all__ = [
    "RESTORATION_KINDS", "METHODS", "is_restoration", "operator_for", "restoration_setup", "load_inputs",
    "load_measurement", "measure", "restore", "restoration_metrics", "restoration_grid", "run_restoration",
    "save_restoration_npz", "evaluate_restoration",
]

log = logging.getLogger(__name__)

RESTORATION_KINDS = ("superres", "deblur", "denoise", "sdedit")
METHODS = ("smc", "dps", "pigdm", "sdedit", "pinv")


def is_restoration(cond: dict[str, Any], kind: str) -> bool:
    """Whether ``condition`` goes through restoration: its kind, or inpaint/colorize with a noisy measurement
    or a restoration-only method (``dps``, ``pigdm``, ``sdedit``, ``pinv``)."""
    if kind in RESTORATION_KINDS:
        return True
    if kind not in ("inpaint", "colorize"):
        return False
    methods = cond.get("method", "paper")
    methods = list(methods) if isinstance(methods, list | tuple) else [methods]
    return float(cond.get("sigma_y", 0.0) or 0.0) != 0.0 or any(m in METHODS and m != "smc" for m in methods)


def operator_for(cond, kind: str, shape: tuple[int, ...], seed: int):
    """The measurement operator of ``kind`` for data of ``shape``."""
    if kind == "sdedit":
        damage = str(cond.get("damage", "superres"))
        if damage not in ("superres", "deblur", "denoise", "inpaint"):
            raise ConfigError(f"condition.damage={damage!r}: valid are superres, deblur, denoise, inpaint")
        kind = damage
    try:
        if kind == "superres":
            return AveragePool(int(cond.get("factor", 2)), shape)
        if kind == "deblur":
            blur = str(cond.get("blur", "gaussian"))
            if blur == "gaussian":
                return GaussianBlur(float(cond.get("blur_sigma", 1.0)), shape)
            if blur == "uniform":
                return UniformBlur(int(cond.get("blur_size", 3)), shape)
            raise ConfigError(f"condition.blur={blur!r}: valid are gaussian, uniform")
        if kind == "denoise":
            return Identity(shape)
        if kind == "inpaint":
            return Mask(make_mask(str(cond.get("mask", "half")), shape, cond.get("rate", 0.5), seed), shape)
        if kind == "colorize":
            return Colorization(shape)
    except ValueError as err:
        raise ConfigError(f"condition={kind}: {err}") from None
    raise ConfigError(f"condition.kind={kind!r} is not a restoration")


def restoration_setup(cfg, cond, kind: str, model, solver, many: bool):
    """The checked methods, sigma_y, t0 and the operator; every check before any score evaluation."""
    methods = [str(m) for m in values_of(cond, "method", many)]
    for method in methods:
        if method == "paper":
            raise ConfigError("condition.method=paper replaces known values exactly; a noisy measurement "
                              f"(sigma_y > 0) needs one of {', '.join(METHODS)}")
        if method not in METHODS:
            raise ConfigError(
                f"condition.method={method!r}: valid restoration methods are {', '.join(METHODS)}"
            )
        try:
            check_solver(method, solver)
        except ValueError as err:
            raise ConfigError(
                f"condition.method={method} with solver={type(solver).__name__}: {err}"
            ) from None
    sigma_y = float(cond.get("sigma_y", 0.0) or 0.0)
    if not sigma_y >= 0:
        raise ConfigError(f"condition.sigma_y={sigma_y}: the measurement noise must be >= 0")
    t0 = float(cond.get("t0", 0.5))
    if "sdedit" in methods and not 0 < t0 <= 1:
        raise ConfigError(f"condition.t0={t0}: SDEdit starts at a time in (0, 1]")
    particles = int(cond.get("particles", 16))
    if "smc" in methods and particles < 1:
        raise ConfigError(f"condition.particles={particles} must be >= 1")
    shape = tuple(model.data_shape)
    return methods, sigma_y, t0, operator_for(cond, kind, shape, int(cfg.seed))


def load_inputs(cfg, cond, model, n: int) -> torch.Tensor:
    """The first ``n`` images of the folder ``condition.input`` (model space), else of the test split."""
    shape = tuple(model.data_shape)
    folder = cond.get("input")
    if folder:
        from scoresde.data.folder import list_images, load_image

        paths = list_images(folder)
        if not paths:
            raise ConfigError(f"condition.input={folder}: no PNG/JPEG images there")
        images = []
        for p in paths[:n]:
            a = load_image(p, shape[1], grayscale=shape[0] == 1)
            if a.shape != shape:
                raise ConfigError(
                    f"condition.input: {p} gives an image of shape {a.shape}, the model's is {shape}"
                )
            images.append(torch.from_numpy(np.array(a)))
        lo, hi = model.hparams.data_range
        return (torch.stack(images).float() / 255.0 * (hi - lo) + lo).to(model.device)
    dm = datamodule_from_config(cfg)
    if tuple(dm.shape) != shape:
        raise ConfigError(
            f"data={cfg.data.get('name', '?')} has shape {tuple(dm.shape)} but the model was "
            f"trained on {shape}"
        )
    available = dm.num_examples("test")
    if not 1 <= n <= available:
        raise ConfigError(f"{n} test image(s) requested; the test split of data={dm.name} has {available}")
    return test_images(dm, n, model.device)


def load_measurement(path: str, operator, device) -> torch.Tensor:
    """Measurements ``(N, *out_shape)`` (or one, ``out_shape``) from a ``.pt``/``.npy`` file, checked."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"condition.measurement={path}: no such file")
    y = torch.as_tensor(np.load(p) if p.suffix == ".npy" else torch.load(p, weights_only=True)).float()
    if tuple(y.shape) == operator.out_shape:
        y = y[None]
    if tuple(y.shape[1:]) != operator.out_shape:
        raise ConfigError(
            f"condition.measurement={path}: shape {tuple(y.shape)} does not fit the operator "
            f"{operator!r}; expected (N, *{operator.out_shape})"
        )
    return y.to(device)


def measure(operator, x: torch.Tensor, sigma_y: float, seed: int) -> torch.Tensor:
    """``y = A x + sigma_y n``, ``n`` from a generator seeded with ``seed``."""
    y = operator(x)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return y + sigma_y * torch.randn(y.shape, generator=g).to(y)


def restore(
    method: str,
    cond,
    model,
    solver,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    t0: float,
    seeds: list[int],
    batch_size: int,
    progress: bool = True,
) -> torch.Tensor:
    """Restorations of the rows of ``y`` with ``method``, in batches (whole groups of equal rows stay
    together for ``smc`` when the batch allows); ``progress``: the samplers' bars."""
    args = (model.score_fn, model.sde, operator)
    out = []
    step = max(1, int(batch_size))
    for a in range(0, len(y), step):
        yb, kw = y[a:a + step], {"seeds": seeds[a:a + step], "progress": progress}
        if method == "pinv":
            x = operator.pinv(yb)
        elif method == "smc":
            x = mcgdiff(solver, *args, yb, sigma_y, particles=int(cond.get("particles", 16)), **kw)
        elif method == "dps":
            x = dps(solver, *args, yb, step_size=float(cond.get("step_size", 1.0)), **kw)
        elif method == "pigdm":
            x = pigdm(solver, *args, yb, sigma_y, weight=float(cond.get("weight", 1.0)), **kw)
        else:
            x = sdedit(solver, model.score_fn, model.sde, operator.pinv(yb), t0, **kw)
        out.append(x.detach())
    return torch.cat(out)


def _unit(x: torch.Tensor, data_range) -> torch.Tensor:
    lo, hi = data_range
    return ((x.float() - lo) / (hi - lo)).clamp(0, 1)


def restoration_metrics(x, originals, operator, y, sigma_y: float, data_range) -> dict[str, float]:
    """PSNR and SSIM (images in [0, 1]; none without originals) and the measurement consistency."""
    residual = (y - operator(x)).reshape(len(x), -1).norm(dim=1) / math.sqrt(operator.out_dim)
    out = {"consistency": float((residual / (sigma_y if sigma_y > 0 else 1.0)).mean())}
    if originals is not None:
        a, b = _unit(x, data_range), _unit(originals, data_range)
        out["psnr"] = float(
            peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean()
        )
        k = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))
        out["ssim"] = float(structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=k))
    return out


def restoration_grid(x, originals, shown_y, per_image: int) -> torch.Tensor:
    """Rows: original (when known), the measurement shown as ``A^+ y``, the ``per_image`` restorations."""
    n, shape = len(shown_y), tuple(shown_y.shape[1:])
    parts = ([originals[:, None].cpu()] if originals is not None else []) + [
        shown_y[:, None].cpu(),
        x.reshape(n, per_image, *shape).cpu(),
    ]
    return torch.cat(parts, dim=1).reshape(-1, *shape)


def save_restoration_npz(x, model, run_dir: Path, seeds) -> str | None:
    if not is_global_zero():
        return None
    hp = model.hparams
    return str(
        write_samples_npz(
            run_dir / "samples.npz",
            x.cpu(),
            levels=hp.levels,
            data_range=tuple(hp.data_range),
            seeds=list(seeds),
        )
    )


def prepare(cfg, cond, kind, model, solver, many: bool):
    """Checked settings, the originals (or None) and the measurements of ``num_images`` inputs."""
    methods, sigma_y, t0, operator = restoration_setup(cfg, cond, kind, model, solver, many)
    n, per_image = int(cond["num_images"]), int(cond["per_image"])
    if n < 1 or per_image < 1:
        raise ConfigError(f"condition.num_images={n} and condition.per_image={per_image} must be >= 1")
    if cond.get("measurement"):
        y, originals = load_measurement(cond["measurement"], operator, model.device)[:n], None
    else:
        originals = load_inputs(cfg, cond, model, n)
        y = measure(operator, originals, sigma_y, int(cfg.seed))
    return methods, sigma_y, t0, operator, originals, y, per_image


def run_restoration(cfg, cond, kind, model, solver, run_dir: Path):
    """``task=sample``: restorations of each input; returns ``(grid, rows, extra)`` for save_condition."""
    (method,), sigma_y, t0, operator, originals, y, per_image = prepare(cfg, cond, kind, model, solver, False)
    n = len(y)
    seeds = per_item_seeds(None, n * per_image, cfg.seed)
    ys = y.repeat_interleave(per_image, dim=0)
    x = restore(method, cond, model, solver, operator, ys, sigma_y, t0, seeds, int(cfg.sample_batch_size),
                progress=show_progress(cfg))
    known = None if originals is None else originals.repeat_interleave(per_image, dim=0)
    metrics = restoration_metrics(x, known, operator, ys, sigma_y, tuple(model.hparams.data_range))
    npz = save_restoration_npz(x, model, run_dir, seeds)
    grid = restoration_grid(x, originals, operator.pinv(y), per_image)
    log.info(
        "condition=%s, method %s: %s", kind, method, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    )
    rows = per_image + (2 if originals is not None else 1)
    return (
        grid,
        rows,
        {
            "method": method,
            "sigma_y": sigma_y,
            "operator": repr(operator),
            "num_images": n,
            "per_image": per_image,
            **metrics,
            **({"npz": npz} if npz else {}),
            "tensors": {
                "samples": x.cpu(),
                "measurements": y.cpu(),
                "seeds": seeds,
                **({"originals": originals.cpu()} if originals is not None else {}),
            },
        },
    )


def evaluate_restoration(cfg, ecfg, cond, kind, model, solver, dm, extractor):
    """``task=evaluate``: per method, the restorations of the first ``num_samples // per_image`` test images
    over the seed sets: PSNR, SSIM, consistency (each with its spread over the seed sets) and the
    feature-space FD/KID of the restorations against the test split."""
    from .quality import evaluation_seed_sets, image_quality, spread_dict

    if cond.get("measurement") or cond.get("input"):
        raise ConfigError(
            "task=evaluate scores restorations of the test split against the originals: drop "
            "condition.measurement / condition.input (task=sample takes them)"
        )
    per_image = int(cond["per_image"])
    n = int(cfg.num_samples) // max(per_image, 1)
    available = dm.num_examples("test")
    if per_image < 1 or not 1 <= n <= available:
        raise ConfigError(
            f"num_samples={cfg.num_samples} with condition.per_image={per_image} restores "
            f"{n} test image(s); need 1..{available} (the test split of data={dm.name})"
        )
    shown = min(n, max(1, int(cond["num_images"])))
    cond = dict(cond, num_images=n)
    methods, sigma_y, t0, operator, originals, y, per_image = prepare(cfg, cond, kind, model, solver, True)
    seed_sets = evaluation_seed_sets(int(ecfg["seed_sets"]), n * per_image, int(cfg.seed))
    hp = model.hparams
    ys, known = y.repeat_interleave(per_image, dim=0), originals.repeat_interleave(per_image, dim=0)
    test_ecfg = dict(ecfg, reference_split="test")
    results, grid, first = {}, [], {}
    for method in methods:
        log.info(
            "condition=%s, method %s: %d seed set(s) of %d test image(s) x %d",
            kind,
            method,
            len(seed_sets),
            n,
            per_image,
        )
        sets, scores = [], []
        for seeds in seed_sets:
            x = restore(
                method, cond, model, solver, operator, ys, sigma_y, t0, seeds, int(cfg.sample_batch_size),
                progress=show_progress(cfg),
            )
            sets.append(x.cpu())
            scores.append(restoration_metrics(x, known, operator, ys, sigma_y, tuple(hp.data_range)))
        first[method] = sets[0]
        grid.append(
            restoration_grid(
                sets[0][: shown * per_image], originals[:shown], operator.pinv(y[:shown]), per_image
            )
        )
        if not is_global_zero():
            continue
        result: dict[str, Any] = {k: spread_dict([s[k] for s in scores], k) for k in scores[0]}
        if n * per_image >= 2:
            result["quality"] = image_quality(
                sets,
                dm,
                test_ecfg,
                levels=hp.levels,
                data_range=tuple(hp.data_range),
                seed=int(cfg.seed),
                extractor=extractor,
                memorization_check=False,
            )
        results[method] = result
        log.info("method %s: PSNR %.3f, SSIM %.3f", method, result["psnr"]["mean"], result["ssim"]["mean"])
    return (
        torch.cat(grid),
        per_image + 2,
        {
            "methods": results,
            "sigma_y": sigma_y,
            "operator": repr(operator),
            "num_images": n,
            "per_image": per_image,
            "seed_sets": len(seed_sets),
            "feature_network": extractor.name,
            "tensors": {
                "samples": first,
                "originals": originals.cpu(),
                "measurements": y.cpu(),
                "seeds": seed_sets[0],
            },
        },
    )
