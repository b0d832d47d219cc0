"""Built-in plugin: deejai in the desktop's system tray (pystray + Pillow, extra ``tray``).

The tray is a front end like the Kivy app: it talks only to the daemon
(:class:`deejai.engine.rpc.Client`). Its parts:

``logic``
    :class:`~deejai.plugins.tray.logic.TrayController` and the state machine - plain Python,
    tested without a display.
``app``
    the pystray glue (:func:`~deejai.plugins.tray.app.run_tray`).
``icons``
    the pictures, drawn with Pillow and shipped as PNG files under ``icons/``.
``desktop``
    opening files, dialogs, notifications and the XDG autostart entry.
``cli``
    the ``deejai tray`` command.

This module registers the ``tray`` command (``register_commands``) and the ``tray`` front end
(``register_frontends``); importing it imports neither pystray nor Pillow.
"""
from __future__ import annotations

from typing import Any

from deejai.plugins.hookspecs import FrontEnd, hookimpl

__all__ = ["register_commands", "register_frontends", "run"]


def run(**options: Any) -> int:
    """Run the tray until Quit (see :func:`deejai.plugins.tray.app.run_tray`)."""
    from deejai.plugins.tray.app import run_tray

    return run_tray(**options)


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``deejai tray``."""
    from deejai.plugins.tray.cli import tray

    cli.add_command(tray)


@hookimpl
def register_frontends() -> list[FrontEnd]:
    """The ``tray`` front end."""
    return [FrontEnd(name="tray", description="system tray icon (pystray): scan, join the dots, "
                     "radio, recent playlists", run=run)]
