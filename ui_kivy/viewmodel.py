"""What the screens show, computed without Kivy: text for numbers, bars for distances.

Everything here is a pure function of engine results (``Engine.status()``, scan events,
``Playlist.to_dict()``), so it is tested without a window.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from deejai.engine.units import format_duration

__all__ = [
    "format_duration",
    "format_eta",
    "library_summary",
    "scan_progress",
    "track_label",
    "waypoint_spec",
    "distance_fractions",
    "playlist_rows",
    "playlist_title",
    "default_export_path",
    "split_folders",
    "contract_home",
]


def format_eta(eta_s: float | None) -> str:
    """``"ETA 1:05"``, or ``"ETA -"`` before the first files are done."""
    return f"ETA {format_duration(eta_s)}"


def _first(d: Mapping[str, Any], *keys: str, default: Any = 0) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return default


def library_summary(status: Mapping[str, Any]) -> dict[str, str]:
    """The Library screen's numbers from ``Engine.status()``.

    Returns
    -------
    dict
        ``tracks``, ``hours``, ``errors`` (strings ready to show) and ``model``.
    """
    tracks = int(_first(status, "tracks", "ok", "n_tracks"))
    errors = int(_first(status, "errors", "error", "n_errors"))
    seconds = _first(status, "duration_s", "total_duration_s", default=None)
    if seconds is None and status.get("hours") is not None:
        seconds = float(status["hours"]) * 3600.0
    hours = (float(seconds) / 3600.0) if seconds is not None else 0.0
    return {
        "tracks": f"{tracks:,}",
        "hours": f"{hours:.1f}" if hours >= 10 or hours == 0 else f"{hours:.2f}",
        "errors": f"{errors:,}",
        "model": str(status.get("model") or ""),
    }


def scan_progress(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bar value and text for one ``scan.progress`` event or a ``scan_status()`` result.

    Returns
    -------
    dict
        ``value`` and ``max`` for the progress bar, ``text`` like
        ``"12 / 90 files · 3 errors · 4.1 files/s · ETA 0:19"``.
    """
    done = int(params.get("done") or 0)
    total = int(params.get("total") or 0)
    errors = int(params.get("errors") or 0)
    rate = float(params.get("rate") or 0.0)
    parts = [f"{done} / {total} files" if total else f"{done} files"]
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if rate > 0:
        parts.append(f"{rate:.1f} files/s")
    parts.append(format_eta(params.get("eta_s")))
    return {"value": done, "max": max(total, 1), "text": " · ".join(parts)}


def track_label(track: Mapping[str, Any]) -> str:
    """``"Artist - Title (Album)"`` for a track record, falling back to the file name."""
    title = track.get("title") or Path(str(track.get("path") or "?")).stem
    artist = track.get("artist") or ""
    album = track.get("album") or ""
    label = f"{artist} - {title}" if artist else str(title)
    return f"{label} ({album})" if album else label


def waypoint_spec(text: str, picked: Mapping[str, Any] | None) -> str | int | None:
    """What to send the engine for one track field.

    The picked track's id while the field still shows its label; otherwise the text as a query
    (the engine resolves it, or says it is ambiguous); None for an empty field.
    """
    text = (text or "").strip()
    if picked is not None and text == track_label(picked):
        return int(picked["id"])
    return text or None


def distance_fractions(distances: Sequence[float]) -> list[float]:
    """Bar lengths in [0, 1] for step distances, relative to the largest step.

    The first entry of a playlist has distance 0 (no step); an all-zero list gives zeros.
    """
    values = [max(0.0, float(d)) for d in distances]
    top = max(values, default=0.0)
    if top <= 0:
        return [0.0 for _ in values]
    return [v / top for v in values]


def playlist_rows(playlist: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per entry for the Playlist screen's list.

    Returns
    -------
    list of dict
        ``index`` (1-based text), ``label`` (artist - title), ``duration``, ``distance``
        (text, 3 decimals), ``fraction`` (bar length in [0, 1]), ``track_id``, ``path``, ``playing`` (False).
    """
    entries = list(playlist.get("entries") or [])
    fractions = distance_fractions([e.get("distance") or 0.0 for e in entries])
    rows = []
    for i, (entry, frac) in enumerate(zip(entries, fractions)):
        title = entry.get("title") or Path(str(entry.get("path") or "?")).stem
        artist = entry.get("artist") or ""
        rows.append(
            {
                "index": str(i + 1),
                "label": f"{artist} - {title}" if artist else str(title),
                "duration": format_duration(entry.get("duration_s")),
                "distance": f"{float(entry.get('distance') or 0.0):.3f}",
                "fraction": frac,
                "track_id": int(entry["id"]),
                "path": str(entry.get("path") or ""),
                "playing": False,
            }
        )
    return rows


def playlist_title(playlist: Mapping[str, Any]) -> str:
    """A heading: kind, number of tracks and total duration."""
    entries = list(playlist.get("entries") or [])
    total = sum(float(e.get("duration_s") or 0.0) for e in entries)
    kind = {"join": "Join the dots", "radio": "Radio"}.get(str(playlist.get("kind")), "Playlist")
    return f"{kind}: {len(entries)} tracks, {format_duration(total)}"


def default_export_path(folder: str | os.PathLike[str], playlist: Mapping[str, Any], now: float | None = None) -> str:
    """``<folder>/deejai-<kind>-<YYYYmmdd-HHMMSS>.m3u8`` for a playlist about to be saved
    (with the home folder shown as ``~``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    kind = str(playlist.get("kind") or "playlist")
    return contract_home(Path(folder) / f"deejai-{kind}-{stamp}.m3u8")


def contract_home(path: str | os.PathLike[str], home: str | None = None) -> str:
    """``~/Music`` for ``/home/me/Music``: paths as a user reads them (``expanduser`` undoes it)."""
    text = str(path)
    home = os.path.expanduser("~") if home is None else home
    home = home.rstrip(os.sep)
    if home and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home):]
    return text


def split_folders(text: str) -> list[str]:
    """Folders typed in the Library screen: one per line, or separated by ``os.pathsep``;
    ``~`` expanded and made absolute here, at the edge (the daemon has another folder)."""
    out: list[str] = []
    for line in (text or "").splitlines():
        out.extend(os.path.abspath(os.path.expanduser(p.strip()))
                   for p in line.split(os.pathsep) if p.strip())
    return out


def unique(items: Iterable[Any]) -> list[Any]:
    """Items in order without repeats."""
    seen: set[Any] = set()
    return [x for x in items if not (x in seen or seen.add(x))]
