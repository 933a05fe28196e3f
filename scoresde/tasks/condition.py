"""Controllable generation in the app (``condition=class|cfg|inpaint|colorize`` and the restorations with
``task=sample`` and ``task=evaluate``): the config group ``conf/condition/`` picks what to condition on;
:mod:`scoresde.conditional` does the math.

* ``class``: classifier guidance with a noise-conditional classifier from ``task=train_classifier``
  (``condition.classifier=<run dir>/classifier.pt``); one row of ``per_class`` samples per label.
* ``cfg``: classifier-free guidance of a class-conditional score model (``model.num_classes=K``).
* ``superres`` / ``deblur`` / ``denoise`` / ``sdedit``, and ``inpaint`` / ``colorize`` with ``sigma_y > 0``
  or a restoration method: restoration of linear measurements (:mod:`scoresde.tasks.restore`).
* ``inpaint`` / ``colorize``: the first ``num_images`` images of the data's test split with a mask
  preset (``half``: bottom half unknown, ``center``: the centre square unknown, ``random``: pixels known
  at ``rate``) or a mask file (``.pt``/``.npy``, True where known, ``(H, W)`` or ``(C, H, W)``);
  colorization knows the gray channel of the paper's decoupling. Each grid row: the input, then
  ``per_image`` completions, then the original.

``task=evaluate``: :mod:`scoresde.tasks.condition_evaluate`.

Outputs in the run directory: ``condition.png`` (the grid), ``condition.pt`` (tensors) and the
``condition`` entry of ``metrics.json``. Every input is checked before sampling starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from scoresde.conditional import (
    IMPUTATION_METHODS,
    cfg_score,
    class_conditional_score,
    classifier_guided_score,
    colorization_transform,
    impute,
    network_classifier,
    over_channels,
)
from scoresde.solvers import ProbabilityFlowODE
from scoresde.train.build import plain
from scoresde.train.distributed import is_global_zero
from scoresde.train.images import save_samples_png

from .common import ConfigError, datamodule_from_config, per_item_seeds, show_progress
from .condition_inputs import make_mask, test_images, values_of
from .restore import is_restoration, run_restoration

__all__ = [
    "KINDS", "checked_condition", "complete", "completion_errors", "completion_grid", "guidance",
    "guidance_scales", "imputation_setup", "make_mask", "run_condition", "save_condition", "test_images",
    "values_of",
]

log = logging.getLogger(__name__)

KINDS = ("none", "class", "cfg", "inpaint", "colorize", "superres", "deblur", "denoise", "sdedit")
def run_condition(cfg: DictConfig, model, solver, run_dir: Path) -> dict[str, Any]:
    """Conditional sampling (``task=sample``) per ``cfg.condition`` with the checkpoint's ``model``;
    returns its metrics."""
    cond, kind = checked_condition(cfg, model)
    if is_restoration(cond, kind):
        x, rows, extra = run_restoration(cfg, cond, kind, model, solver, run_dir)
    elif kind in ("class", "cfg"):
        x, rows, extra = _guided(cfg, cond, kind, model, solver)
    else:
        x, rows, extra = _inverse(cfg, cond, kind, model, solver)
    return {"kind": kind, **save_condition(x, rows, cond, extra.pop("tensors"), model, run_dir), **extra}


def checked_condition(cfg: DictConfig, model) -> tuple[dict[str, Any], str]:
    """The ``condition`` block (plain) and its kind, checked against the model (an image model)."""
    cond = plain(cfg.condition)
    kind = cond["kind"]
    if kind not in KINDS:
        raise ConfigError(f"condition.kind={kind!r}: valid kinds are {', '.join(KINDS)}")
    if model.data_shape is None or len(model.data_shape) != 3:
        raise ConfigError(f"condition={kind} needs an image model; this one has data shape "
                          f"{model.data_shape}")
    return cond, kind


def save_condition(x, rows: int, cond, tensors: dict[str, Any], model, run_dir: Path) -> dict[str, Any]:
    """``condition.png`` (the grid ``x``, ``rows`` images a row) and ``condition.pt``; rank 0 only."""
    if not is_global_zero():
        return {"files": {}}
    hp = model.hparams
    run_dir.mkdir(parents=True, exist_ok=True)
    png = save_samples_png(x, run_dir / "condition.png", levels=hp.levels,
                           data_range=tuple(hp.data_range), nrow=rows)
    pt = run_dir / "condition.pt"
    torch.save({"grid": x, "condition": cond, **tensors}, pt)
    log.info("condition=%s: %s", cond["kind"], png)
    return {"files": {"png": str(png), "pt": str(pt)}}


def guidance_scales(cond, many: bool) -> list[float]:
    """The guidance scales of ``condition.scale`` (each >= 0; a list only when ``many``)."""
    scales = [float(w) for w in values_of(cond, "scale", many)]
    if any(not w >= 0 for w in scales):
        raise ConfigError(f"condition.scale={cond['scale']}: guidance scales must be >= 0")
    return scales


def guidance(cond, kind: str, model) -> tuple[list[int], Callable]:
    """The checked labels of ``condition.labels`` and ``score(y, scale)``, the guided score towards the
    labels ``y``: classifier guidance (``class``) or classifier-free guidance (``cfg``)."""
    if kind == "class":
        from scoresde.train.classifier import load_classifier

        if not cond.get("classifier"):
            raise ConfigError("condition=class needs a classifier: "
                              "condition.classifier=<run dir>/classifier.pt "
                              "(train one with task=train_classifier)")
        try:
            clf, _ = load_classifier(cond["classifier"], map_location=model.device)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"condition.classifier: {err}") from None
        num_classes = clf.num_classes
        classifier = network_classifier(clf, model.sde)

        def score(y, scale):
            return classifier_guided_score(model.score_fn, classifier, y, scale)
    else:
        num_classes = int(getattr(model.net, "num_classes", 0))
        if not num_classes:
            raise ConfigError("condition=cfg needs a class-conditional score model, but this checkpoint has "
                              "no class conditioning (train with model.num_classes=K); use condition=class "
                              "with a classifier instead")
        cond_fn = class_conditional_score(model.net, model.sde, model.hparams.parameterization)

        def score(y, scale):
            return cfg_score(cond_fn, y, scale, model.net.null_label)
    labels = list(range(num_classes)) if cond.get("labels") is None else [int(v) for v in cond["labels"]]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ConfigError(f"condition.labels: class {bad[0]} is outside the model's labels "
                          f"0..{num_classes - 1}")
    return labels, score


def _guided(cfg, cond, kind, model, solver):
    """Class-guided or classifier-free-guided samples, one row per label."""
    per_class, (scale,) = int(cond["per_class"]), guidance_scales(cond, many=False)
    if per_class < 1:
        raise ConfigError(f"condition.per_class={per_class} must be >= 1")
    labels, score = guidance(cond, kind, model)
    y = torch.tensor(labels, device=model.device).repeat_interleave(per_class)
    seeds = per_item_seeds(None, len(y), cfg.seed)
    x = solver.sample(score(y, scale), model.sde, (len(y), *model.data_shape), seeds=seeds,
                      device=model.device, progress=show_progress(cfg))
    return x.cpu(), per_class, {"labels": labels, "scale": scale, "nfe": solver.nfe,
                                "tensors": {"samples": x.cpu(), "labels": y.cpu(), "seeds": seeds}}


def imputation_setup(cfg, cond, kind, model, solver, many: bool):
    """The checked methods, the channel transform (colorization) or None, the mask and the data module."""
    methods = [str(m) for m in values_of(cond, "method", many)]
    for method in methods:
        if method not in IMPUTATION_METHODS:
            raise ConfigError(f"condition.method={method!r}: valid methods are "
                              f"{', '.join(IMPUTATION_METHODS)} (imputation of exact values) and dps, pigdm, "
                              "sdedit, pinv (restoration; with condition.sigma_y > 0 smc too)")
        if method == "smc" and isinstance(solver, ProbabilityFlowODE):
            raise ConfigError("condition.method=smc needs a stochastic sampler: solver=em or solver=pc")
    shape = tuple(model.data_shape)
    transform = None
    if kind == "colorize":
        if shape[0] != 3:
            raise ConfigError(f"condition=colorize needs 3-channel RGB data; this model's data have "
                              f"{shape[0]} channel(s) (use condition=inpaint)")
        transform = colorization_transform()
        mask = torch.tensor([True, False, False])[:, None, None]
    else:
        mask = make_mask(str(cond["mask"]), shape, cond.get("rate", 0.5), int(cfg.seed))
    dm = datamodule_from_config(cfg)
    if tuple(dm.shape) != shape:
        raise ConfigError(f"data={cfg.data.get('name', '?')} has shape {tuple(dm.shape)} but the model was "
                          f"trained on {shape}")
    return methods, transform, mask.to(model.device), dm


def complete(cond, method, model, solver, originals, per_image, mask, transform, seeds, batch_size,
             progress: bool = True):
    """``per_image`` completions of each original (rows in order), imputed in batches of whole images (the
    rows of one image share an observation, which ``method=smc`` pools); ``progress``: the samplers' bars."""
    known = originals.repeat_interleave(per_image, dim=0)
    step = max(1, int(batch_size) // per_image) * per_image
    parts = [impute(solver, model.score_fn, model.sde, known[a:a + step], mask, transform=transform,
                    method=method, seeds=seeds[a:a + step], particles=int(cond.get("particles", 16)),
                    progress=progress)
             for a in range(0, len(known), step)]
    return torch.cat(parts), known


def completion_errors(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor,
                      transform: torch.Tensor | None = None) -> dict[str, float]:
    """How far completions ``x`` are from the originals ``known``: ``rms_unknown`` (the unknown coordinates
    of inpainting; every RGB value for colorization), ``known_max_deviation`` (the known coordinates, in the
    transformed space: 0 for inpainting) and for colorization ``rms_unknown_transformed`` (the unknown
    channels of ``U x``)."""
    u = over_channels(transform, x) if transform is not None else x
    u_true = over_channels(transform, known) if transform is not None else known
    m = mask.expand_as(u)
    out = {"known_max_deviation": float((u - u_true)[m].abs().max()) if m.any() else 0.0}
    if transform is None:
        out["rms_unknown"] = float(((x - known)[~m] ** 2).mean().sqrt())
    else:
        out["rms_unknown"] = float(((x - known) ** 2).mean().sqrt())
        out["rms_unknown_transformed"] = float(((u - u_true)[~m] ** 2).mean().sqrt())
    return out


def completion_grid(x, originals, per_image: int, mask, transform) -> torch.Tensor:
    """Rows: the input (unknown: black, or no chroma), the ``per_image`` completions, the original."""
    n, shape = len(originals), tuple(originals.shape[1:])
    u_true = over_channels(transform, originals) if transform is not None else originals
    blank = torch.full_like(u_true, -1.0 if transform is None else 0.0)
    shown = torch.where(mask, u_true, blank)
    shown = over_channels(transform.T, shown) if transform is not None else shown
    grid = torch.cat([shown[:, None], x.reshape(n, per_image, *shape), originals[:, None]], dim=1)
    return grid.reshape(-1, *shape).cpu()


def _inverse(cfg, cond, kind, model, solver):
    """Inpainting or colorization of test images; the grid shows input, completions, original."""
    (method,), transform, mask, dm = imputation_setup(cfg, cond, kind, model, solver, many=False)
    n, per_image = int(cond["num_images"]), int(cond["per_image"])
    if n < 1 or per_image < 1:
        raise ConfigError(f"condition.num_images={n} and condition.per_image={per_image} must be >= 1")
    originals = test_images(dm, n, model.device)
    seeds = per_item_seeds(None, n * per_image, cfg.seed)
    x, known = complete(cond, method, model, solver, originals, per_image, mask, transform, seeds,
                         int(cfg.sample_batch_size), progress=show_progress(cfg))
    rmse = completion_errors(x, known, mask, transform)
    rmse = rmse.get("rms_unknown_transformed", rmse["rms_unknown"])
    return completion_grid(x, originals, per_image, mask, transform), per_image + 2, {
        "method": method, "rmse_unknown": rmse, "num_images": n, "per_image": per_image,
        "tensors": {"samples": x.cpu(), "originals": originals.cpu(), "mask": mask.cpu(), "seeds": seeds}}
