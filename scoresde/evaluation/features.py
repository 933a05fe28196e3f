"""Pluggable feature networks for image-quality metrics: one interface, several networks.

A :class:`FeatureExtractor` is an ``nn.Module`` that maps a batch of integer images ``(N, C, H, W)`` in
``[0, levels)`` (``uint8``, exactly the quantized form of the data) to features ``(N, num_features)``;
networks that are classifiers also give class logits ``(N, num_classes)`` (then the Inception Score and
the classifier-confidence metric are defined). Its ``forward`` returns the features only, so an extractor
can be passed straight to torchmetrics as ``FrechetInceptionDistance(feature=extractor)`` or
``KernelInceptionDistance(feature=extractor)``; :meth:`FeatureExtractor.logits_module` serves
``InceptionScore(feature=...)``.

Attributes every extractor has:

* ``name`` -- the registry name (``"digits"``, ``"mnist"``, ``"inception"``);
* ``num_features`` (int; torchmetrics reads it) and ``num_classes`` (0 when there are no logits);
* ``levels`` -- the number of grey levels its input integers span (17 for digits, 256 for 8-bit images);
* ``input_shape`` -- ``(C, H, W)`` it accepts, or None for any size;
* ``fingerprint`` -- a string that changes whenever the features could change (architecture, weights,
  preprocessing); used in the reference-statistics cache key.

The networks themselves live in :mod:`~.classifier` and :mod:`~.inception`, their names in
:mod:`~.registry`; this module is the interface only and imports neither.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureExtractor", "check_images"]


def check_images(
    images: torch.Tensor, levels: int, input_shape: tuple[int, int, int] | None = None, what: str = "images"
) -> None:
    """Raise a clear ``ValueError`` unless ``images`` is an integer tensor ``(N, C, H, W)`` with values in
    ``[0, levels)`` (and per-example shape ``input_shape`` when given)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{what} must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.is_floating_point() or images.is_complex() or images.dtype == torch.bool:
        raise ValueError(
            f"{what} must be integer images (uint8) in [0, {levels}), got dtype {images.dtype}; quantize "
            "model-space samples first (scoresde.evaluation.to_uint8 / scoresde.quantization.quantize)"
        )
    if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{what}: expected per-example shape {tuple(input_shape)}, got {tuple(images.shape[1:])}"
        )
    if images.numel():
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi >= levels:
            raise ValueError(
                f"{what} must lie in [0, {levels}) for this feature network, but span [{lo}, {hi}]; "
                "check the data's number of levels"
            )


class FeatureExtractor(nn.Module):
    """Base class: integer images -> features (``forward``) and, for classifiers, class logits.

    Subclasses set the attributes listed in the module docstring and implement :meth:`_forward`, which
    receives checked integer images and returns ``(features, logits or None)``. The module never leaves
    evaluation mode and has no trainable parameters.
    """

    name: str = ""
    num_features: int = 0
    num_classes: int = 0
    levels: int = 256
    input_shape: tuple[int, int, int] | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever the features could change; part of the reference-statistics cache key."""
        raise NotImplementedError

    @property
    def has_logits(self) -> bool:
        """Whether the network gives class logits (Inception Score, classifier confidence)."""
        return self.num_classes > 0

    @property
    def device(self) -> torch.device:
        """The device of the network's parameters or buffers (CPU if it has none)."""
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in evaluation mode whatever ``mode`` asks (as torchmetrics' Inception does)."""
        return super().train(False)

    def check(self, images: torch.Tensor) -> None:
        """Raise a clear ``ValueError`` if ``images`` is not valid input for this network."""
        check_images(images, self.levels, self.input_shape)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features (N, num_features), logits (N, num_classes) or None)`` of one batch (no grad)."""
        self.check(images)
        with torch.no_grad():
            return self._forward(images.to(self.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, num_features)`` of integer images ``(N, C, H, W)``."""
        return self.features_and_logits(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``; ``ValueError`` if the network has none."""
        if not self.has_logits:
            raise ValueError(f"feature network {self.name!r} has no class logits")
        logits = self.features_and_logits(images)[1]
        assert logits is not None
        return logits

    def logits_module(self) -> nn.Module:
        """An ``nn.Module`` whose forward gives the logits, for ``torchmetrics``' ``InceptionScore``."""
        if not self.has_logits:
            raise ValueError(
                f"feature network {self.name!r} has no class logits; the Inception Score needs them"
            )
        return _LogitsOf(self)

    def extract(
        self, images: torch.Tensor, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and logits of many images, in batches of ``batch_size``; returned on the CPU as
        float64 (features) / float32 (logits, or None)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.check(images)
        feats, logits = [], []
        for start in range(0, len(images), batch_size):
            f, lg = self.features_and_logits(images[start : start + batch_size])
            feats.append(f.detach().to("cpu", torch.float64))
            if lg is not None:
                logits.append(lg.detach().to("cpu", torch.float32))
        if not feats:
            return torch.zeros(0, self.num_features, dtype=torch.float64), (
                torch.zeros(0, self.num_classes) if self.has_logits else None
            )
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_features={self.num_features}, num_classes={self.num_classes}"


class _LogitsOf(nn.Module):
    """View of a feature extractor whose forward returns its class logits."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor.logits(images)
