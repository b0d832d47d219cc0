"""The hooks a deejai plugin can implement, and the small types they return.

deejai uses pluggy_ with the project name ``deejai``; a plugin is a module (or any object) whose
functions are marked with :data:`hookimpl` and whose distribution declares an entry point in
the group ``deejai``. The built-in plugins (:mod:`deejai.plugins.exporters`,
:mod:`deejai.plugins.mpd`) register through these same hooks (Datasette's habit).

Every hook is called once per plugin and takes no part in another plugin's call; what a hook
returns is checked against the types below, and a plugin whose hook raises or returns something
else is disabled as a whole (see :mod:`deejai.plugins.manager`).

.. _pluggy: https://pluggy.readthedocs.io/
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from deejai.engine.catalogue import Playlist

__all__ = [
    "PROJECT_NAME",
    "hookspec",
    "hookimpl",
    "Exporter",
    "Sink",
    "FrontEnd",
    "register_commands",
    "register_exporters",
    "register_sinks",
    "register_rpc_methods",
    "register_frontends",
    "register_settings",
]

#: The pluggy project name and the setuptools entry-point group of deejai plugins.
PROJECT_NAME = "deejai"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorator that marks a plugin's function as the implementation of a hook of the same name.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@dataclass(frozen=True)
class Exporter:
    """A playlist file format.

    Attributes
    ----------
    name : str
        Short name used by ``--format`` and :func:`deejai.plugins.manager.exporters`
        (``"m3u8"``).
    extension : str
        File extension without the dot (``"m3u8"``); :func:`exporter_for_path` matches it
        case-insensitively.
    media_type : str
        IANA media type of the output (``"audio/x-mpegurl"``), for HTTP front ends.
    render : callable
        ``render(playlist, base_dir) -> bytes``: ``playlist`` is a
        :class:`deejai.engine.catalogue.Playlist`; ``base_dir`` is the folder the file will be
        written to (a :class:`pathlib.Path`, or ``None`` when the output has no location), so
        that formats which support it can write relative paths.
    """

    name: str
    extension: str
    media_type: str
    render: Callable[["Playlist", Any], bytes]


@dataclass(frozen=True)
class Sink:
    """Somewhere a playlist can be sent: a music player, a server.

    Attributes
    ----------
    name : str
        Short name (``"mpd"``).
    send : callable
        ``send(playlist, settings, **options) -> dict``: ``playlist`` is a
        :class:`deejai.engine.catalogue.Playlist`, ``settings`` the sink's own section of the
        settings (``[mpd]`` for the ``mpd`` sink, a dict); returns a JSON-serialisable report of what
        was done (tracks sent, tracks refused with the reason). Raises a
        :class:`deejai.engine.errors.DeejaiError` when nothing could be sent.
    """

    name: str
    send: Callable[..., dict]


@dataclass(frozen=True)
class FrontEnd:
    """A user interface that talks to the engine (the tray icon is one).

    Attributes
    ----------
    name : str
        Short name (``"tray"``).
    description : str
        One line shown by ``deejai plugins``.
    run : callable
        ``run(**options)``: starts the front end and returns when it is closed.
    """

    name: str
    description: str
    run: Callable[..., Any]


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add click commands to the ``deejai`` command group ``cli``."""


@hookspec
def register_exporters() -> list[Exporter]:
    """Return a list of :class:`Exporter` (playlist file formats) this plugin provides."""


@hookspec
def register_sinks() -> list[Sink]:
    """Return a list of :class:`Sink` (places a playlist can be sent to) this plugin provides."""


@hookspec
def register_rpc_methods() -> dict[str, Callable[..., Any]]:
    """Return a dict of JSON-RPC method name -> ``callable(engine, **params)`` for the daemon."""


@hookspec
def register_frontends() -> list[FrontEnd]:
    """Return a list of :class:`FrontEnd` (user interfaces over the engine) this plugin provides."""


@hookspec
def register_settings() -> dict[str, type]:
    """Return section name -> settings schema (a ``msgspec.Struct`` class with defaults and
    ``msgspec.Meta(description=...)`` help) for this plugin's ``[section]`` of settings.toml."""
