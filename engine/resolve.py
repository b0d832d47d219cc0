"""Name a track the way a person does: by path, by id, or by a few words.

:func:`resolve_track` turns what a user typed into exactly one track id, or says why it cannot:
:class:`~deejai.engine.errors.AmbiguousTrackError` lists the best candidates (never a silent
guess), :class:`~deejai.engine.errors.TrackNotFoundError` says how to look tracks up.

Matching is the one search rule of :mod:`deejai.engine.search` (the same ``deejai tracks`` and
the app's search box use): case- and accent-insensitive, so ``"bjork joga"`` finds
"Björk – Jóga", and punctuation and the separators people type (``-``, ``–``) do not matter.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from deejai.engine.errors import AmbiguousTrackError, TrackNotFoundError
from deejai.engine.search import SearchIndex, check_query, normalise_text, record_stem, words

__all__ = ["resolve_track", "normalise_text", "words", "track_label", "MAX_CANDIDATES"]

#: At most this many candidates are listed in an :class:`AmbiguousTrackError`.
MAX_CANDIDATES = 20

_ID = re.compile(r"^\s*#?\s*(\d+)\s*$")


def track_label(record: Mapping[str, Any]) -> str:
    """``"artist – title – album"`` with empty parts left out; the file name stands in for a
    missing title."""
    title = record.get("title") or record_stem(record)
    parts = [record.get("artist") or "", title or "", record.get("album") or ""]
    return " – ".join(str(p) for p in parts if p)


@dataclass
class _Entry:
    record: Mapping[str, Any]
    exact: set[tuple[str, ...]]
    title: tuple[str, ...]
    n_label: int


def _entry(record: Mapping[str, Any]) -> _Entry:
    stem = record_stem(record)
    artist = words(record.get("artist") or "")
    title = words(record.get("title") or "") or words(stem)
    album = words(record.get("album") or "")
    exact = {tuple(title), tuple(artist + title), tuple(artist + title + album), tuple(words(stem))}
    exact.discard(())
    return _Entry(record, exact, tuple(title), len(artist) + len(title) + len(album))


class _Prepared:
    """What matching needs from a list of records, computed once per list."""

    def __init__(self, source: Any, records: list[Mapping[str, Any]]) -> None:
        self.source = source
        self.size = len(records)
        self.records = records
        self.ids = {int(r["id"]) for r in records}
        self.by_path = {str(r.get("path")): int(r["id"]) for r in records}
        self.index = SearchIndex(records)


_last: _Prepared | None = None


def _prepare(records: Iterable[Mapping[str, Any]]) -> _Prepared:
    """Prepared records; the same list object passed again (the Engine caches its records per
    library revision) reuses the last preparation, so it must not be changed in place."""
    global _last
    last = _last
    if last is not None and last.source is records and isinstance(records, list) \
            and len(records) == last.size:
        return last
    prepared = _Prepared(records, list(records))
    _last = prepared
    return prepared


def _by_path(spec: str, records: Sequence[Mapping[str, Any]], by_path: dict[str, int],
             library_root: str | None) -> int | None:
    """The id of the record whose path is ``spec`` (as typed, absolute, or real path)."""
    forms = {spec, os.path.abspath(os.path.expanduser(spec))}
    if library_root:
        forms.add(os.path.abspath(os.path.join(os.path.expanduser(library_root), spec)))
    for form in forms:
        if form in by_path:
            return by_path[form]
    existing = [f for f in forms if os.path.isfile(f)]
    if not existing:
        return None
    real = {os.path.realpath(f) for f in existing}
    base = {os.path.basename(f) for f in existing} | {os.path.basename(f) for f in real}
    # cheap pass first: same file name, then every record (symlinked names may differ)
    same_name = [r for r in records if os.path.basename(str(r.get("path"))) in base]
    for group in (same_name, records):
        for rec in group:
            p = str(rec.get("path") or "")
            if p and os.path.realpath(p) in real:
                return int(rec["id"])
    return None


def resolve_track(
    spec: str | int,
    records: Iterable[Mapping[str, Any]],
    *,
    library_root: str | os.PathLike[str] | None = None,
) -> int:
    """The id of the one track ``spec`` names.

    ``spec`` is tried, in this order, as

    1. an ``int``, or ``"#42"``: a track id (``TrackNotFoundError`` when unknown);
    2. a path: the path as typed, made absolute, relative to ``library_root``, or the real path
       of an existing file (symlinks resolved) equal to a record's path (real path);
    3. ``"42"`` (digits only): a track id when one has that id, else a query (a title such as
       "1999" still works);
    4. a query, by the one search rule (:class:`deejai.engine.search.SearchIndex`): every word
       of ``spec`` must start a word of "artist – title – album – file name" (when nothing
       matches so, every word must occur anywhere in that text), case- and
       accent-insensitive.

    One match gives its id. Several matches give its id only when exactly one of them is an
    exact match of the whole query: the query's words are those of the title, of artist +
    title, of artist + title + album, or of the file name. Otherwise the matches are listed.

    Parameters
    ----------
    spec : str or int
        What the user typed.
    records : iterable of dict
        The library's tracks, each with ``id``, ``path``, ``artist``, ``title``, ``album``
        (:meth:`deejai.engine.library.Library.records`).
    library_root : path-like, optional
        Folder that relative paths may be relative to.

    Returns
    -------
    int
        The track id.

    Raises
    ------
    TrackNotFoundError
        Nothing matches (the message suggests ``deejai tracks``).
    AmbiguousTrackError
        Several tracks match; ``candidates`` holds up to :data:`MAX_CANDIDATES` of them as
        ``{"id", "label"}``, best first: exact title matches, then those with the fewest words
        besides the query's, then by id.
    InvalidParamsError
        ``spec`` is longer than a query may be (:func:`deejai.engine.search.check_query`).
    """
    if isinstance(spec, str):
        check_query(spec, None)
    prepared = _prepare(records)
    records, ids = prepared.records, prepared.ids
    if isinstance(spec, bool):
        raise TrackNotFoundError(f"{spec!r} is not a track")
    if isinstance(spec, int):
        if spec in ids:
            return spec
        raise TrackNotFoundError(f"no track with id {spec}; list tracks with `deejai tracks`")
    spec = str(spec)
    if not spec.strip():
        raise TrackNotFoundError("an empty track name; give a path, an id or a few words")
    m = _ID.match(spec)
    if m and spec.strip().startswith("#"):
        tid = int(m.group(1))
        if tid in ids:
            return tid
        raise TrackNotFoundError(f"no track with id {tid}; list tracks with `deejai tracks`")
    found_id = _by_path(spec, records, prepared.by_path,
                        None if library_root is None else os.fspath(library_root))
    if found_id is not None:
        return found_id
    if m and int(m.group(1)) in ids:
        return int(m.group(1))

    query = words(spec)
    if not query:
        raise TrackNotFoundError(f"{spec!r} has no words to look for; give a path, an id or words")
    found = prepared.index.match(query)
    if not found:
        hint = "a file that is not in the library (scan it first)" if os.path.exists(spec) else None
        raise TrackNotFoundError(
            f"no track matches {spec!r}"
            + (f": {hint}" if hint else "")
            + "; list tracks with `deejai tracks`"
        )
    matches = [_entry(r) for r in found]
    if len(matches) == 1:
        return int(matches[0].record["id"])
    q = tuple(query)
    exact = [e for e in matches if q in e.exact]
    if len(exact) == 1:
        return int(exact[0].record["id"])

    def rank(e: _Entry) -> tuple[int, int, int]:
        extra = e.n_label - len(query)
        return (0 if e.title == q else 1, extra, int(e.record["id"]))

    matches.sort(key=rank)
    candidates = [
        {"id": int(e.record["id"]), "label": track_label(e.record)} for e in matches[:MAX_CANDIDATES]
    ]
    raise AmbiguousTrackError(spec, candidates, total=len(matches))
