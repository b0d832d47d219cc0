"""In-memory snapshot of a library's vectors and metadata, the input of the playlist functions.

The playlist algorithms (:mod:`deejai.engine.playlist`) are pure functions over a
:class:`Catalogue` and a vector index; :meth:`deejai.engine.library.Library.catalogue` builds
one from SQLite. Rows are positions ``0..N-1``; ``ids`` maps a row to its track id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["Catalogue", "PlaylistEntry", "Playlist", "l2_normalise", "TAG_FIELDS"]

#: The tags read from a file and stored per track (``TrackAnalysis.tags`` keys, the tag columns
#: of the library's ``tracks`` table); ``year`` and ``tracknumber`` are ints.
TAG_FIELDS = ("title", "artist", "album", "albumartist", "genre", "year", "tracknumber")


def l2_normalise(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Return ``x`` scaled to unit L2 norm along ``axis`` (float32; zero rows stay zero).

    Parameters
    ----------
    x : np.ndarray, float, shape (..., d)
    axis : int
    eps : float
        Norms below ``eps`` are treated as zero, so silence never gives NaN.
    """
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.where(norm > eps, x / np.maximum(norm, eps), 0.0).astype(np.float32)


@dataclass
class Catalogue:
    """Vectors and the metadata the playlist constraints need, one row per track.

    Attributes
    ----------
    ids : np.ndarray, int64, shape (N,)
        Track ids (``tracks.id`` in SQLite).
    vectors : np.ndarray, float32, shape (N, d)
        L2-normalised track vectors (mean of patch embeddings).
    intro, outro : np.ndarray, float32, shape (N, d), or None
        L2-normalised vectors of the first and last patch, for transition-aware steps.
    duration_s : np.ndarray, float32, shape (N,)
        Track lengths in seconds.
    artist : list of str, length N
        Artist names ("" when unknown), for the no-repeat-artist constraint.
    audio_hash : list of str, length N
        Audio content hashes; equal hashes are near-duplicates.
    tag_probs : np.ndarray, float32, shape (N, T), or None
        Mean tag probabilities per track, for ``tag:`` waypoints.
    tag_labels : list of str, length T
        The model's tag labels, in the order of ``tag_probs``' columns.
    """

    ids: np.ndarray
    vectors: np.ndarray
    duration_s: np.ndarray
    artist: Sequence[str]
    audio_hash: Sequence[str]
    intro: np.ndarray | None = None
    outro: np.ndarray | None = None
    tag_probs: np.ndarray | None = None
    tag_labels: Sequence[str] = ()
    _row_of: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self._row_of = {int(i): r for r, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def row(self, track_id: int) -> int:
        """Row of ``track_id``; raises ``KeyError`` when it is not in the catalogue."""
        return self._row_of[int(track_id)]

    def rows(self, track_ids: Sequence[int]) -> np.ndarray:
        """Rows of several track ids, as int64 (``KeyError`` for an unknown id)."""
        return np.fromiter((self._row_of[int(i)] for i in track_ids), dtype=np.int64)


@dataclass
class PlaylistEntry:
    """One track of a playlist as the front ends show and export it.

    ``distance`` is the cosine distance (1 - cos) of the step from the previous entry, 0 for the
    first entry.
    """

    id: int
    path: str
    artist: str = ""
    title: str = ""
    album: str = ""
    duration_s: float = 0.0
    distance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def label(self) -> str:
        """"artist - title", falling back to the file name."""
        import os

        title = self.title or os.path.splitext(os.path.basename(self.path))[0]
        return f"{self.artist} - {title}" if self.artist else title


@dataclass
class Playlist:
    """An ordered list of :class:`PlaylistEntry` plus how it was made."""

    entries: list[PlaylistEntry]
    kind: str = "join"  # "join" or "radio"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Playlist":
        """Rebuild a playlist from :meth:`to_dict`'s output.

        Raises
        ------
        TypeError, ValueError
            When ``data`` is not shaped like a playlist (missing ``id``/``path``, wrong types).
        """
        if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
            raise TypeError("a playlist is an object with a list of entries")

        def entry(e: Any) -> PlaylistEntry:
            if not isinstance(e, dict):
                raise TypeError("each entry is an object with at least id and path")
            out = PlaylistEntry(**e)
            out.id, out.path = int(out.id), str(out.path)
            out.duration_s, out.distance = float(out.duration_s), float(out.distance)
            for key in ("artist", "title", "album"):
                setattr(out, key, str(getattr(out, key) or ""))
            return out

        return cls(
            entries=[entry(e) for e in data.get("entries", [])],
            kind=data.get("kind", "join"),
            params=dict(data.get("params", {})),
        )

    def __len__(self) -> int:
        return len(self.entries)
