"""Error classes of the evaluation layer.

Defined here (not imported from :mod:`scoresde.data`) so that the evaluation layer stays importable without
Lightning. Nothing in the evaluation layer ever downloads: a missing weights file raises
:class:`WeightsNotFoundError` with where it was looked for, where to get it and where to put it.
"""

from __future__ import annotations

__all__ = ["WeightsFormatError", "WeightsNotFoundError"]


class WeightsNotFoundError(FileNotFoundError):
    """A feature network's weights file is missing. The message names the paths searched, how to obtain
    the file (a URL as text, or the command that trains it) and where to put it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class WeightsFormatError(ValueError):
    """A weights file exists but does not hold what the feature network expects (wrong keys or shapes,
    wrong format); the message names the file."""
