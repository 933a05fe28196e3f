"""Controllable generation in the app (``condition=class|cfg|inpaint|colorize`` with ``task=sample``):
the config group ``conf/condition/`` picks what to condition on; :mod:`scoresde.conditional` does the math.

* ``class``: classifier guidance with a noise-conditional classifier from ``task=train_classifier``
  (``condition.classifier=<run dir>/classifier.pt``); one row of ``per_class`` samples per label.
* ``cfg``: classifier-free guidance of a class-conditional score model (``model.num_classes=K``).
* ``inpaint`` / ``colorize``: the first ``num_images`` images of the data's test split with a mask
  preset (``half``: bottom half unknown, ``center``: the centre square unknown, ``random``: pixels known
  at ``rate``) or a mask file (``.pt``/``.npy``, True where known, ``(H, W)`` or ``(C, H, W)``);
  colorization knows the gray channel of the paper's decoupling. Each grid row: the input, then
  ``per_image`` completions, then the original.

Outputs in the run directory: ``condition.png`` (the grid), ``condition.pt`` (tensors) and the
``condition`` entry of ``metrics.json``. Every input is checked before sampling starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
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
from scoresde.train.build import plain
from scoresde.train.distributed import is_global_zero
from scoresde.train.images import save_samples_png

from .common import ConfigError, datamodule_from_config, per_item_seeds

__all__ = ["KINDS", "make_mask", "run_condition"]

log = logging.getLogger(__name__)

KINDS = ("none", "class", "cfg", "inpaint", "colorize")
MASK_PRESETS = ("half", "center", "random")


def make_mask(spec: str, shape: tuple[int, ...], rate: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A bool mask (True where known) broadcastable to images of ``shape = (C, H, W)``: a preset or a file."""
    c, h, w = shape
    if spec == "half":
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, : h // 2] = True
        return mask
    if spec == "center":
        mask = torch.ones(1, h, w, dtype=torch.bool)
        mask[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = False
        return mask
    if spec == "random":
        if not 0 < float(rate) < 1:
            raise ConfigError(f"condition.rate={rate}: the fraction of known pixels must lie in (0, 1)")
        return torch.rand(1, h, w, generator=torch.Generator().manual_seed(int(seed))) < float(rate)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise ConfigError(f"condition.mask={spec!r}: neither a preset ({', '.join(MASK_PRESETS)}) "
                          "nor a mask file")
    mask = torch.as_tensor(np.load(path) if path.suffix == ".npy" else torch.load(path, weights_only=True))
    if tuple(mask.shape) not in ((h, w), (c, h, w), (1, h, w)):
        raise ConfigError(f"condition.mask={spec}: a mask of shape {tuple(mask.shape)} does not fit the "
                          f"data; expected (H, W) = ({h}, {w}) or (C, H, W) = ({c}, {h}, {w}), "
                          "True where known")
    return mask.bool().reshape(-1, h, w)


def run_condition(cfg: DictConfig, model, solver, run_dir: Path) -> dict[str, Any]:
    """Conditional sampling per ``cfg.condition`` with the checkpoint's ``model``; returns its metrics."""
    cond = plain(cfg.condition)
    kind = cond["kind"]
    if kind not in KINDS:
        raise ConfigError(f"condition.kind={kind!r}: valid kinds are {', '.join(KINDS)}")
    if model.data_shape is None or len(model.data_shape) != 3:
        raise ConfigError(f"condition={kind} needs an image model; this one has data shape "
                          f"{model.data_shape}")
    if kind in ("class", "cfg"):
        x, rows, extra = _guided(cfg, cond, kind, model, solver)
    else:
        x, rows, extra = _inverse(cfg, cond, kind, model, solver)
    hp = model.hparams
    files = {}
    if is_global_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        png = save_samples_png(x, run_dir / "condition.png", levels=hp.levels,
                               data_range=tuple(hp.data_range), nrow=rows)
        pt = run_dir / "condition.pt"
        torch.save({"grid": x, "condition": cond, **extra.pop("tensors")}, pt)
        files = {"png": str(png), "pt": str(pt)}
        log.info("condition=%s: %s", kind, png)
    return {"kind": kind, "files": files, **{k: v for k, v in extra.items() if k != "tensors"}}


def _guided(cfg, cond, kind, model, solver):
    """Class-guided or classifier-free-guided samples, one row per label."""
    per_class, scale = int(cond["per_class"]), float(cond["scale"])
    if per_class < 1 or scale < 0:
        raise ConfigError(f"condition.per_class={per_class} must be >= 1 and condition.scale={scale} >= 0")
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
    else:
        num_classes = int(getattr(model.net, "num_classes", 0))
        if not num_classes:
            raise ConfigError("condition=cfg needs a class-conditional score model, but this checkpoint has "
                              "no class conditioning (train with model.num_classes=K); use condition=class "
                              "with a classifier instead")
    labels = list(range(num_classes)) if cond.get("labels") is None else [int(v) for v in cond["labels"]]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ConfigError(f"condition.labels: class {bad[0]} is outside the model's labels "
                          f"0..{num_classes - 1}")
    y = torch.tensor(labels, device=model.device).repeat_interleave(per_class)
    if kind == "class":
        score = classifier_guided_score(model.score_fn, network_classifier(clf, model.sde), y, scale)
    else:
        cond_fn = class_conditional_score(model.net, model.sde, model.hparams.parameterization)
        score = cfg_score(cond_fn, y, scale, model.net.null_label)
    seeds = per_item_seeds(None, len(y), cfg.seed)
    x = solver.sample(score, model.sde, (len(y), *model.data_shape), seeds=seeds, device=model.device,
                      progress=True)
    return x.cpu(), per_class, {"labels": labels, "scale": scale, "nfe": solver.nfe,
                                "tensors": {"samples": x.cpu(), "labels": y.cpu(), "seeds": seeds}}


def _inverse(cfg, cond, kind, model, solver):
    """Inpainting or colorization of test images; the grid shows input, completions, original."""
    method = cond["method"]
    if method not in IMPUTATION_METHODS:
        raise ConfigError(f"condition.method={method!r}: valid methods are {', '.join(IMPUTATION_METHODS)}")
    n, per_image = int(cond["num_images"]), int(cond["per_image"])
    if n < 1 or per_image < 1:
        raise ConfigError(f"condition.num_images={n} and condition.per_image={per_image} must be >= 1")
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
    images = []
    for batch in dm.test_dataloader():
        images.append(batch[0] if isinstance(batch, list | tuple) else batch)
        if sum(len(b) for b in images) >= n:
            break
    originals = torch.cat(images)[:n].to(model.device)
    known = originals.repeat_interleave(per_image, dim=0)
    seeds = per_item_seeds(None, len(known), cfg.seed)
    x = impute(solver, model.score_fn, model.sde, known, mask.to(model.device), transform=transform,
               method=method, seeds=seeds, particles=int(cond.get("particles", 16)), progress=True)
    u = over_channels(transform, x) if transform is not None else x
    u_true = over_channels(transform, known) if transform is not None else known
    unknown = ~mask.to(model.device).expand_as(u)
    rmse = float(((u - u_true)[unknown] ** 2).mean().sqrt())
    blank = torch.full_like(u_true, -1.0 if transform is None else 0.0)  # unknown: black, or no chroma
    shown = torch.where(mask.to(model.device), u_true, blank)
    shown = over_channels(transform.T, shown) if transform is not None else shown
    grid = torch.cat([shown[::per_image, None], x.reshape(n, per_image, *shape), originals[:, None]], dim=1)
    return grid.reshape(-1, *shape).cpu(), per_image + 2, {
        "method": method, "rmse_unknown": rmse, "num_images": n, "per_image": per_image,
        "tensors": {"samples": x.cpu(), "originals": originals.cpu(), "mask": mask.cpu(), "seeds": seeds}}
