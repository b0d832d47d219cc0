"""Built-in plugin: playlist files in the m3u8, XSPF and JSON formats.

Formats
-------
m3u8
    Extended M3U in UTF-8 (the de-facto format described in RFC 8216 section 4 for HLS, and
    by Winamp for local playlists): ``#EXTM3U``, then per track ``#EXTINF:<seconds>,<artist -
    title>`` and the file's path. Paths are relative to the playlist's folder when the track
    sits under it (so a playlist saved inside the music folder survives moving the whole
    folder), else absolute. Unknown durations are written as ``-1``.
    M3U has no escapes, so one entry must be one line: a path holding a line break or another
    control character (a file may be called ``new\nline.mp3``) is written as a ``file://``
    URI, percent-encoded (which VLC, mpv and MPD read), a relative path that starts with
    ``#`` gets a leading ``./``, and control characters in titles become spaces.
xspf
    XML Shareable Playlist Format version 1 (https://xspf.org/spec): ``location`` is a
    ``file://`` URI (percent-encoded UTF-8, :meth:`pathlib.Path.as_uri`), ``duration`` in
    milliseconds, ``title``, ``creator`` (the artist) and ``album``. Control characters, which
    XML 1.0 cannot hold, become spaces in the text fields.
json
    The playlist's own dict (:meth:`deejai.engine.catalogue.Playlist.to_dict`), UTF-8, indented;
    JSON escapes control characters, and U+2028, U+2029 and lone surrogates are escaped too, so
    every string is read back as it was and no string holds a line break.

Looking exporters up, rendering and writing files atomically is the engine's job
(:class:`deejai.engine.export.Exporters`, reached through the Engine's ``export`` or
:func:`deejai.plugins.manager.write_playlist`); this module only provides the formats, so it
imports nothing from the plugin manager.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from deejai.plugins.hookspecs import Exporter, hookimpl

if TYPE_CHECKING:  # pragma: no cover - the catalogue imports NumPy; the CLI starts without it
    from deejai.engine.catalogue import Playlist

__all__ = [
    "XSPF_NAMESPACE",
    "render_m3u8",
    "render_xspf",
    "render_json",
    "M3U8",
    "XSPF",
    "JSON",
    "register_exporters",
]

#: XML namespace of XSPF version 1 (https://xspf.org/spec).
XSPF_NAMESPACE = "http://xspf.org/ns/0/"


def _unsafe(ch: str) -> bool:
    """Control characters, line and paragraph separators, lone surrogates."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


def _one_line(text: str) -> str:
    """``text`` on one line: control characters and line breaks become spaces, runs of
    white space one space."""
    return " ".join("".join(" " if _unsafe(c) else c for c in str(text)).split())


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _m3u_location(path: str, base_dir: Path | None) -> str:
    """The line of a track in an M3U playlist: a relative or absolute path, or a ``file://``
    URI when the path holds a character that could end or break the line."""
    target = _absolute(path)
    if any(_unsafe(c) for c in str(target)):
        return target.as_uri()  # percent-encoded: one line, still the same file
    if base_dir is not None:
        base = _absolute(base_dir)
        if target.is_relative_to(base):
            rel = str(target.relative_to(base))
            return f".{os.sep}{rel}" if rel.startswith("#") else rel  # not a comment line
    return str(target)


#: What XML 1.0 cannot hold (https://www.w3.org/TR/xml/#charsets).
_XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: What a JSON string keeps raw (ensure_ascii=False) that a line-based reader splits on, or
#: that UTF-8 cannot encode.
_JSON_ESCAPE = re.compile("[\u007f-\u009f\u2028\u2029\ud800-\udfff]")


def _escape(pattern: re.Pattern[str], text: str) -> str:
    """``text`` (JSON) with the characters ``pattern`` matches as ``\\uXXXX`` escapes; they
    only occur inside JSON strings, where the escape means the same character."""
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render_m3u8(playlist: Playlist, base_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Render an extended M3U playlist, UTF-8 encoded.

    Parameters
    ----------
    playlist : Playlist
    base_dir : path-like or None
        Folder of the playlist file; tracks under it are written relative to it. ``None``:
        every path absolute.

    Returns
    -------
    bytes
        ``#EXTM3U`` then two lines per track (``#EXTINF:<seconds>,<label>`` with the duration
        rounded to whole seconds, ``-1`` when unknown; then the path), ``\\n`` line endings.
    """
    base = Path(base_dir) if base_dir is not None else None
    lines = ["#EXTM3U"]
    for entry in playlist.entries:
        seconds = int(round(entry.duration_s)) if entry.duration_s and entry.duration_s > 0 else -1
        lines.append(f"#EXTINF:{seconds},{_one_line(entry.label)}")
        lines.append(_m3u_location(entry.path, base))
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_xspf(playlist: Playlist, base_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Render an XSPF version 1 playlist (UTF-8 XML).

    Parameters
    ----------
    playlist : Playlist
    base_dir : path-like or None
        Unused: locations are absolute ``file://`` URIs, which every XSPF reader resolves.

    Returns
    -------
    bytes
        ``<playlist version="1" xmlns="http://xspf.org/ns/0/">`` with a ``title``, an
        ``annotation`` holding the playlist's kind and parameters as JSON, and one ``track``
        per entry (``location``, ``title``, ``creator``, ``album``, ``duration`` in ms, in the
        element order the specification gives; empty fields are left out).
    """
    del base_dir

    def sub(parent: ET.Element, tag: str, text: str) -> None:
        ET.SubElement(parent, tag).text = text

    # Unqualified tags under an explicit default namespace declaration: ElementTree's
    # ``default_namespace`` option refuses the unqualified ``version`` attribute.
    root = ET.Element("playlist", {"version": "1", "xmlns": XSPF_NAMESPACE})
    sub(root, "title", f"deejai {playlist.kind}")
    sub(root, "creator", "deejai")
    annotation = json.dumps(
        {"kind": playlist.kind, "params": playlist.params}, ensure_ascii=False,
        default=_json_default,
    )
    sub(root, "annotation", _escape(_XML_ILLEGAL, _escape(_JSON_ESCAPE, annotation)))
    track_list = ET.SubElement(root, "trackList")
    for entry in playlist.entries:
        track = ET.SubElement(track_list, "track")
        sub(track, "location", _absolute(entry.path).as_uri())
        for tag, value in (("title", entry.title), ("creator", entry.artist),
                           ("album", entry.album)):
            if value:
                sub(track, tag, _one_line(value))
        if entry.duration_s and entry.duration_s > 0:
            sub(track, "duration", str(int(round(entry.duration_s * 1000))))
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):  # NumPy arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def render_json(playlist: Playlist, base_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Render the playlist's dict (:meth:`Playlist.to_dict`) as indented UTF-8 JSON."""
    del base_dir
    text = json.dumps(playlist.to_dict(), ensure_ascii=False, indent=2, default=_json_default)
    return (_escape(_JSON_ESCAPE, text) + "\n").encode("utf-8")


M3U8 = Exporter("m3u8", "m3u8", "audio/x-mpegurl", render_m3u8)
XSPF = Exporter("xspf", "xspf", "application/xspf+xml", render_xspf)
JSON = Exporter("json", "json", "application/json", render_json)


@hookimpl
def register_exporters() -> list[Exporter]:
    """The m3u8, xspf and json exporters."""
    return [M3U8, XSPF, JSON]
