"""How to install the optional parts ("extras") of deejai, said the same way everywhere.

deejai installs from its source folder (``pip install .``, as the README says) or from a
package index where it is published there; an extra is named the same both ways.
"""
from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` (``kivy``, ``tray``, ``mpd``, ``map``), both ways.

    >>> install_hint("kivy")
    'pip install ".[kivy]" in the deejai source folder (or pip install "deejai[kivy]")'
    """
    return f'pip install ".[{extra}]" in the deejai source folder (or pip install "deejai[{extra}]")'
