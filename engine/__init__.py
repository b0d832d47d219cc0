"""deejai's engine: audio front end, model, analysis, library, index, playlists and the service.

The engine imports no UI code (no click, kivy or pystray). Heavy modules (the TFLite runtime,
FAISS, librosa) are imported lazily by the functions that need them, so that importing
``deejai.engine`` and starting the CLI stays fast.
"""
from deejai.engine.errors import DeejaiError

__all__ = ["DeejaiError"]
