"""A small CNN classifier as a feature network (``digits``, ``mnist``), its training recipe and its files.

Architecture (:class:`SmallCNN`): per width ``w`` in ``widths`` two 3x3 convolutions (ReLU) and a 2x2
max-pool, then a linear layer to ``num_features`` units (ReLU) -- the **features** -- then dropout and a
linear layer to the class **logits**. Input integers ``k`` in ``[0, levels)`` are scaled to ``k/(levels-1)``.

Training (:func:`train_classifier`): Adam with a cosine learning-rate schedule, cross-entropy, random
translations by up to ``max_shift`` pixels (zero fill), fixed number of epochs; every random draw comes from
``seed`` (the caller's global RNG state is restored afterwards), so a run is reproducible on one machine and
thread count. No model selection on the test split. The command-line front end is
``scripts/train_classifier.py``; the shipped digits weights were made by::

    python scripts/train_classifier.py digits

Weights file (``torch.save`` of a plain dict, loadable with ``weights_only=True``):
``{"format": "scoresde-classifier", "version": 1, "arch": {...}, "state_dict": {...}, "meta": {...}}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scoresde.evaluation.errors import WeightsFormatError, WeightsNotFoundError
from scoresde.evaluation.features import FeatureExtractor
from scoresde.evaluation.weight_files import default_weights_dir, package_weights_dir, state_dict_digest

__all__ = [
    "DIGITS_WEIGHTS_FILE",
    "MNIST_WEIGHTS_FILE",
    "ClassifierFeatureExtractor",
    "SmallCNN",
    "classifier_accuracy",
    "digits_feature_extractor",
    "load_classifier",
    "mnist_feature_extractor",
    "random_shift",
    "save_classifier",
    "train_classifier",
]

WEIGHTS_FORMAT = "scoresde-classifier"
WEIGHTS_VERSION = 1
DIGITS_WEIGHTS_FILE = "digits_classifier.pt"
MNIST_WEIGHTS_FILE = "mnist_classifier.pt"


class SmallCNN(nn.Module):
    """Conv classifier for small grey/colour images; ``forward`` gives ``(features, logits)``.

    Args:
        input_shape: ``(C, H, W)``; each stage halves ``H`` and ``W`` (floor), which must stay >= 1.
        levels: number of input grey levels; integers ``k`` are scaled to ``k / (levels - 1)``.
        num_classes: number of classes.
        widths: channels of each stage (two 3x3 convolutions and a 2x2 max-pool per stage).
        num_features: width of the penultimate (feature) layer.
        dropout: dropout before the output layer (training only).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        levels: int,
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64),
        num_features: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        if not widths:
            raise ValueError("widths must name at least one stage")
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_shape)} is too small for {len(widths)} pooling stages")
        self.arch = {
            "input_shape": [int(s) for s in input_shape],
            "levels": int(levels),
            "num_classes": int(num_classes),
            "widths": [int(x) for x in widths],
            "num_features": int(num_features),
            "dropout": float(dropout),
        }
        self.levels = int(levels)
        self.body = nn.Sequential(*layers)
        self.feature_layer = nn.Linear(c * h * w, num_features)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / (self.levels - 1)
        x = self.body(x).flatten(1)
        feats = F.relu(self.feature_layer(x))
        return feats, self.out(self.dropout(feats))


class ClassifierFeatureExtractor(FeatureExtractor):
    """A trained :class:`SmallCNN` as a feature network: features = penultimate layer, logits = output.

    Args:
        model: the trained network.
        name: registry name (``"digits"``, ``"mnist"``).
        meta: free-form metadata from the weights file (data set, accuracy, command).
    """

    def __init__(self, model: SmallCNN, name: str, meta: dict | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.meta = dict(meta or {})
        self.num_features = int(model.arch["num_features"])
        self.num_classes = int(model.arch["num_classes"])
        self.levels = int(model.arch["levels"])
        self.input_shape = tuple(model.arch["input_shape"])
        arch = json.dumps(model.arch, sort_keys=True)
        digest = hashlib.sha256((arch + state_dict_digest(model.state_dict())).encode()).hexdigest()
        self._fingerprint = f"{name}-smallcnn-v1:{digest[:16]}"
        self.eval()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images)


# ----------------------------------------------------------------------------------------------- files
def save_classifier(model: SmallCNN, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` (and ``meta``: JSON-like values only) to ``path`` atomically; returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "arch": dict(model.arch),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_classifier(
    path: str | Path, name: str, device: str | torch.device = "cpu"
) -> ClassifierFeatureExtractor:
    """Load a weights file written by :func:`save_classifier` as a feature network called ``name``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"classifier weights file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsFormatError(f"cannot read classifier weights {path}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsFormatError(
            f"{path} is not a scoresde classifier weights file (expected a dict with "
            f"format={WEIGHTS_FORMAT!r}); train one with scripts/train_classifier.py"
        )
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsFormatError(f"{path}: unsupported classifier weights version {payload.get('version')!r}")
    arch = payload["arch"]
    model = SmallCNN(
        tuple(arch["input_shape"]), arch["levels"], arch["num_classes"], tuple(arch["widths"]),
        arch["num_features"], arch["dropout"],
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise WeightsFormatError(f"{path}: weights do not fit the architecture {arch}: {e}") from e
    return ClassifierFeatureExtractor(model, name, payload.get("meta")).to(device)


def digits_feature_extractor(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> ClassifierFeatureExtractor:
    """The ``digits`` feature network: the classifier shipped with the package (or the file ``weights``).
    Input: uint8 ``(N, 1, 8, 8)`` in ``[0, 17)``; 128 features, 10 logits."""
    path = Path(weights).expanduser() if weights is not None else package_weights_dir() / DIGITS_WEIGHTS_FILE
    if not path.is_file():
        raise WeightsNotFoundError(
            f"digits classifier weights not found at {path}. They ship with the package; if they are missing "
            f"(or to rebuild them) run `python scripts/train_classifier.py digits --out {path}` from the "
            "repository root (seconds on a CPU; nothing is downloaded)."
        )
    return load_classifier(path, "digits", device)


def mnist_weights_candidates(weights: str | Path | None = None) -> list[Path]:
    """Where the MNIST classifier is looked for, in order: ``weights``; ``$SCORESDE_MNIST_CLASSIFIER``;
    ``default_weights_dir()/mnist_classifier.pt``; the package's weights directory."""
    if weights is not None:
        return [Path(weights).expanduser()]
    out = []
    env = os.environ.get("SCORESDE_MNIST_CLASSIFIER")
    if env:
        out.append(Path(env).expanduser())
    return out + [default_weights_dir() / MNIST_WEIGHTS_FILE, package_weights_dir() / MNIST_WEIGHTS_FILE]


def mnist_feature_extractor(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> ClassifierFeatureExtractor:
    """The ``mnist`` feature network: a :class:`SmallCNN` trained locally on MNIST (no weights ship).
    Input: uint8 ``(N, 1, 28, 28)`` in ``[0, 256)``; 128 features, 10 logits."""
    candidates = mnist_weights_candidates(weights)
    for path in candidates:
        if path.is_file():
            return load_classifier(path, "mnist", device)
    target = candidates[0] if weights is not None else default_weights_dir() / MNIST_WEIGHTS_FILE
    raise WeightsNotFoundError(
        f"MNIST classifier weights not found (searched: {', '.join(map(str, candidates))}). No weights "
        "ship for MNIST: train them from the local MNIST IDX files with "
        f"`python scripts/train_classifier.py mnist --root /path/to/mnist --out {target}` "
        "(tens of minutes on a 2-core CPU), or point `weights=` / $SCORESDE_MNIST_CLASSIFIER at an existing "
        "file. Nothing is downloaded."
    )


# ----------------------------------------------------------------------------------------------- training
def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``images`` ``(B, C, H, W)`` by a random integer offset in
    ``[-max_shift, max_shift]`` per axis, filling with zeros."""
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    s = max_shift
    padded = F.pad(images, (s, s, s, s))
    offsets = torch.randint(0, 2 * s + 1, (b, 2), generator=generator)
    out = torch.empty_like(images)
    for dy in range(2 * s + 1):
        for dx in range(2 * s + 1):
            sel = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            if sel.any():
                out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: int,
    num_classes: int = 10,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 1,
    widths: tuple[int, ...] = (32, 64),
    num_features: int = 128,
    dropout: float = 0.3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on integer images ``(N, C, H, W)`` in ``[0, levels)`` with int labels.

    Deterministic given ``seed`` (initialisation, order, augmentation and dropout all draw from it; the
    global RNG state is restored on return). ``log`` receives one line per epoch.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"need as many labels as images (> 0), got {len(images)} images, {len(labels)} labels"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    labels = labels.to(torch.int64)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(tuple(images.shape[1:]), levels, num_classes, widths, num_features, dropout)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(len(images) / batch_size)
        total = epochs * steps_per_epoch
        cosine = lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=gen)
            loss_sum, correct = 0.0, 0
            for start in range(0, len(images), batch_size):
                idx = order[start : start + batch_size]
                x = random_shift(images[idx], max_shift, gen)
                _, logits = model(x)
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == labels[idx]).sum())
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / len(images):.4f}, "
                    f"train accuracy (augmented) {correct / len(images):.4f}")
    return model.eval()


def classifier_accuracy(
    model: SmallCNN | ClassifierFeatureExtractor,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
) -> float:
    """Fraction of ``images`` whose arg-max class equals ``labels``."""
    if isinstance(model, ClassifierFeatureExtractor):
        logits = model.extract(images, batch_size)[1]
        assert logits is not None
    else:
        model.eval()
        with torch.no_grad():
            chunks = [model(images[i : i + batch_size])[1] for i in range(0, len(images), batch_size)]
            logits = torch.cat(chunks)
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())
