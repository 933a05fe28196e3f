"""Weights shipped with the package (``digits_classifier.pt``).

A package (not a plain folder) so that package discovery finds it and its ``*.pt`` files ship.
"""
