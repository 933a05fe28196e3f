"""Small runnable examples of the library (no training, no data download)."""

from .oracle_demo import oracle_demo

__all__ = ["oracle_demo"]
