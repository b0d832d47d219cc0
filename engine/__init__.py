"""deejai's engine: scan a music library, make playlists, and serve them to front ends.

The public API is this package's ``__all__``::

    from deejai.engine import Engine, connect, Playlist

    engine = connect(fallback="in-process")   # the daemon when it runs, else in process
    playlist = engine.join(waypoints=["battle epic", "ambient 4"], n=8)

* :class:`Engine` - the facade: ``scan``, ``tracks``, ``track``, ``resolve``, ``join``,
  ``radio``, ``export``, ``status``... (its method table is the protocol's contract,
  ``docs/protocol.md``);
* :func:`connect` - the one policy every front end uses to reach an engine (the daemon when
  it answers; else start one, or run in process, as asked);
* :class:`Playlist`, :class:`PlaylistEntry` - what ``join`` and ``radio`` return, as objects
  (``Playlist.from_dict``);
* the errors: :class:`DeejaiError` and its subclasses (``deejai.engine.errors`` draws the
  tree), with the connection errors :class:`DaemonNotRunning`, :class:`ConnectionLost` and
  :class:`AuthenticationFailed`.

Everything else (the modules ``library``, ``index``, ``playlist``, ``rpc``...) is deejai's own
plumbing, used by its front ends and plugins and free to change. The engine imports no UI
code and no plugin (no click, kivy or pystray; a test walks its imports). Heavy modules (the
TFLite runtime, FAISS, librosa) are imported lazily by the functions that need them, and so
are the names above, so that importing ``deejai.engine`` and starting the CLI stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from deejai.engine.errors import (
    AmbiguousTrackError,
    AuthenticationFailed,
    ConfigError,
    ConnectionLost,
    DaemonError,
    DaemonNotRunning,
    DeejaiError,
    LibraryEmptyError,
    PlaylistError,
    TrackNotFoundError,
)

__all__ = [
    "Engine",
    "connect",
    "Playlist",
    "PlaylistEntry",
    "DeejaiError",
    "ConfigError",
    "TrackNotFoundError",
    "AmbiguousTrackError",
    "LibraryEmptyError",
    "PlaylistError",
    "DaemonError",
    "DaemonNotRunning",
    "ConnectionLost",
    "AuthenticationFailed",
]

_LAZY = {
    "Engine": "deejai.engine.service",
    "connect": "deejai.engine.rpc.connect",
    "Playlist": "deejai.engine.catalogue",
    "PlaylistEntry": "deejai.engine.catalogue",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deejai.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
