"""Playlist files: the exporters the Engine was handed, looked up, rendered, written.

The Engine never imports plugins: the composition root (``deejai serve``, the command line,
the Kivy app) gives it the exporters the plugins registered, and :class:`Exporters` is the
one place they are looked up by name or by file extension, rendered (a plugin's failure
becomes a :class:`~deejai.engine.errors.PluginError`) and written atomically.

An exporter is any object with ``name``, ``extension`` (without the dot), ``media_type`` and
``render(playlist, base_dir) -> bytes`` (:class:`deejai.plugins.hookspecs.Exporter`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from deejai.engine._fs import atomic_write
from deejai.engine.errors import ConfigError, DeejaiError, PluginError

__all__ = ["Exporters", "as_playlist", "send_playlist"]


def as_playlist(playlist: Any) -> Any:
    """A :class:`~deejai.engine.catalogue.Playlist` from one, or from its dict form.

    Raises
    ------
    PlaylistError
        When ``playlist`` is not shaped like a playlist.
    """
    from deejai.engine.catalogue import Playlist
    from deejai.engine.errors import PlaylistError

    if isinstance(playlist, Playlist):
        return playlist
    try:
        if not isinstance(playlist, Mapping):
            raise TypeError(f"a playlist is an object, not {type(playlist).__name__}")
        return Playlist.from_dict(dict(playlist))
    except (TypeError, AttributeError, ValueError) as exc:
        raise PlaylistError(
            f"not a playlist: {exc}; pass a playlist as join or radio return it"
        ) from None


class Exporters:
    """The playlist formats at hand, by name.

    Parameters
    ----------
    exporters : iterable or mapping of exporters
        Later ones win when two have the same name.
    """

    def __init__(self, exporters: Iterable[Any] | Mapping[str, Any] = ()) -> None:
        items = exporters.values() if isinstance(exporters, Mapping) else exporters
        self._by_name: dict[str, Any] = {e.name.lower(): e for e in items}

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """The format names, sorted."""
        return sorted(self._by_name)

    def describe(self) -> list[dict[str, str]]:
        """``[{"name", "extension", "media_type"}, ...]``, for save dialogs."""
        return [{"name": e.name, "extension": e.extension, "media_type": e.media_type}
                for e in self._by_name.values()]

    def get(self, name: str) -> Any:
        """The exporter called ``name`` (case-insensitive).

        Raises
        ------
        ConfigError
            When there is none; the message lists the known formats.
        """
        try:
            return self._by_name[name.lower()]
        except KeyError:
            known = ", ".join(self.names()) or "none (no exporter plugin is loaded)"
            raise ConfigError(f"unknown playlist format {name!r}; known formats: {known}") from None

    def for_path(self, path: str | os.PathLike[str]) -> Any:
        """The exporter whose extension matches ``path``'s (case-insensitive).

        Raises
        ------
        ConfigError
            When the extension is missing or no exporter writes it; the message names the
            file and lists the known extensions.
        """
        suffix = Path(path).suffix.lower().lstrip(".")
        for exporter in self._by_name.values():
            if exporter.extension.lower() == suffix:
                return exporter
        extensions = ", ".join(sorted("." + e.extension for e in self._by_name.values()))
        what = f"'.{suffix}' files" if suffix else "files without an extension"
        raise ConfigError(f"{path}: no playlist format writes {what}; known: {extensions}")

    def render(self, playlist: Any, format: str, base_dir: str | os.PathLike[str] | None = None
               ) -> bytes:
        """Render ``playlist`` (a Playlist or its dict) with the exporter ``format``.

        Raises
        ------
        ConfigError
            Unknown format.
        PluginError
            The exporter raised or returned something other than bytes.
        """
        return self._render(self.get(format), as_playlist(playlist), base_dir)

    @staticmethod
    def _render(exporter: Any, playlist: Any, base_dir: Any) -> bytes:
        try:
            data = exporter.render(playlist, Path(base_dir) if base_dir is not None else None)
        except DeejaiError:
            raise
        except Exception as exc:
            raise PluginError(
                f"the {exporter.name!r} exporter failed: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise PluginError(
                f"the {exporter.name!r} exporter returned {type(data).__name__}, expected bytes"
            )
        return data

    def write(self, playlist: Any, path: str | os.PathLike[str], format: str | None = None
              ) -> tuple[Path, str]:
        """Write a playlist file atomically; returns ``(path, format name)``.

        The bytes go to a temporary file in the same folder, which is flushed, synced and
        renamed over ``path``, so a reader never sees half a playlist and an existing file is
        kept when rendering fails.

        Parameters
        ----------
        playlist : Playlist or dict
        path : path-like
            Where to write (an absolute path: the front end made it so).
        format : str, optional
            Exporter name; by default chosen from ``path``'s extension.

        Raises
        ------
        ConfigError
            Unknown format, or an extension no exporter writes.
        PluginError
            The exporter failed.
        DeejaiError
            The file cannot be written (missing folder, permissions); the message names it.
        """
        target = Path(path)
        exporter = self.get(format) if format else self.for_path(target)
        data = self._render(exporter, as_playlist(playlist), target.parent)
        try:
            atomic_write(target, data)
        except OSError as exc:
            raise DeejaiError(
                f"{target}: cannot write the playlist ({exc.strerror or exc})") from None
        return target, exporter.name


def send_playlist(sink: Any, name: str, playlist: Any, section: Mapping[str, Any] | None,
                  **options: Any) -> dict[str, Any]:
    """Hand ``playlist`` to ``sink`` (``send(playlist, section, **options)``) with its own
    settings section; a sink's unexpected exception becomes one :class:`PluginError` line.

    Raises
    ------
    DeejaiError
        What the sink raises on purpose (``SinkError``, ``ConfigError``), or ``PluginError``.
    """
    try:
        return sink.send(as_playlist(playlist), dict(section or {}), **options)
    except DeejaiError:
        raise
    except Exception as exc:  # a third-party sink's bug: one line, not a traceback
        raise PluginError(f"the {name!r} sink failed: {type(exc).__name__}: {exc}") from exc
