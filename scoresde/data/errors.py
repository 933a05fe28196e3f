"""Error classes of the data layer.

Every problem with files on disk surfaces as one of these two classes, with a message that names the
file or directory involved -- never as a raw traceback from deep inside numpy, gzip, pickle or Pillow.
"""

from __future__ import annotations

__all__ = ["DataFormatError", "DataNotFoundError"]


class DataNotFoundError(FileNotFoundError):
    """Expected data files are missing. The message lists the expected file names, the directories
    searched, where to get the files and which option (``root``) to set. Nothing is ever downloaded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DataFormatError(ValueError):
    """A data file exists but is malformed (bad header, truncated, wrong keys, shapes or values,
    undecodable image). The message names the file and says what was expected."""
