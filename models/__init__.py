"""The models deejai ships: one folder per model (``model.tflite`` + ``card.json``)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["MODELS_DIR", "DEFAULT_MODEL"]

#: Folder holding the shipped model folders.
MODELS_DIR = Path(__file__).resolve().parent
#: Name of the model used when the settings name none.
DEFAULT_MODEL = "msd-musicnn-v2"
