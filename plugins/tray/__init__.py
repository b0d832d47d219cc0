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

from typing import Annotated, Any, Literal

import msgspec

from deejai.plugins.hookspecs import FrontEnd, hookimpl

__all__ = ["TraySettings", "register_commands", "register_frontends", "register_settings", "run"]


def _help(text: str, **constraints: Any) -> Any:
    return msgspec.Meta(description=text, **constraints)


class TraySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[tray]`` section of settings.toml."""

    playlist_dir: Annotated[str, _help(
        "Where the tray saves playlists; empty: <data dir>/playlists.",
        extra={"path": True})] = ""
    join_length: Annotated[int, _help("Tracks between the two ends of a join.", ge=0)] = 8
    radio_length: Annotated[int, _help("Tracks a radio playlist adds.", ge=1)] = 20
    send_to: Annotated[str, _help(
        "\"open\" (the desktop's player) or a sink, e.g. \"mpd\".")] = "open"
    join_with: Annotated[Literal["auto", "app", "dialog"], _help(
        "Join the dots in the Kivy app, a dialog, or auto: the app when installed.")] = "auto"
    opener: Annotated[str | list[str], _help(
        "Command that opens playlists and folders; empty: xdg-open (open on macOS).")] = ""
    poll_interval_s: Annotated[float, _help(
        "Seconds between two polls of the daemon besides its notifications.", gt=0)] = 2.0


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


@hookimpl
def register_settings() -> dict[str, type]:
    """The ``[tray]`` section."""
    return {"tray": TraySettings}
