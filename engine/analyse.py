"""One audio file in, one :class:`TrackAnalysis` out: tags, duration, audio hash and vectors.

This is the unit of work the scan's worker pool runs::

    analyse(path, model, k=None)
        mutagen          -> tags (title, artist, album, albumartist, genre, year, tracknumber)
        audio.load_patches -> k log-mel patches spread over the track
        model.predict    -> per-patch embeddings and tag probabilities
        mean + L2 norm   -> track vector; first/last patch -> intro/outro vectors

Broken tags never stop the analysis (the tags are then ``{}``); a file that cannot be decoded
raises an :class:`~deejai.engine.errors.AudioError`.

The audio hash identifies the audio content, so re-tagging a file does not make it a new
track; see :func:`audio_hash`.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deejai.engine import audio as _audio
from deejai.engine.catalogue import l2_normalise
from deejai.engine.errors import AudioError

__all__ = [
    "TrackAnalysis",
    "analyse",
    "read_tags",
    "audio_hash",
    "analysis_to_json",
    "top_tags",
    "DEFAULT_PATCHES",
    "TAG_KEYS",
]

#: Patches analysed per track when ``k`` is not given: the smallest k of 4, 8, 16, 32, 64
#: whose track vectors keep >= 95 % of each track's top-5 neighbours under all-patch vectors,
#: as ``benchmarks/patches.py`` measured on a corpus of game soundtracks. On 44 tracks (every
#: 2nd file; 105 patches per track) top-5 overlap was 0.60 / 0.86 / 0.90 / 0.96 / 0.99 and the
#: mean cosine to the all-patch vector 0.931 / 0.985 / 0.992 / 0.9987 / 0.9996 for
#: k = 4 / 8 / 16 / 32 / 64, while a second all-patch analysis shifted by half a patch reached
#: only 0.927 overlap (cosine 0.9945): k = 32 is within the measure's own noise. (All 88
#: tracks: overlap 0.53 / 0.73 / 0.82 / 0.91 for k = 4..32.) A track with fewer than 32
#: non-overlapping patches (under ~96 s) is analysed whole.
DEFAULT_PATCHES = 32

#: The tags read from a file (``absent`` = unknown); ``year`` and ``tracknumber`` are ints.
TAG_KEYS = ("title", "artist", "album", "albumartist", "genre", "year", "tracknumber")

_HASH_BYTES = 16  # blake2b digest size: 128 bits, 32 hex characters
_CHUNK = 1 << 20


@dataclass
class TrackAnalysis:
    """The result of analysing one file (the contract in ``docs/architecture.md``).

    Attributes
    ----------
    path : str
        Absolute path.
    size : int
        File size (bytes).
    mtime_ns : int
        Modification time (ns since the epoch).
    duration_s : float
        Length of the audio (seconds).
    tags : dict
        ``title``, ``artist``, ``album``, ``albumartist``, ``genre`` (str), ``year``,
        ``tracknumber`` (int); a missing key means unknown.
    audio_hash : str
        Hex digest of the audio content, unchanged when only tags change (:func:`audio_hash`).
    model : str
        The model card's name, e.g. ``"msd-musicnn"``.
    patch_starts_s : np.ndarray, float32, shape (k,)
        Start of each analysed patch (seconds).
    patch_vectors : np.ndarray, float32, shape (k, d)
        Per-patch embeddings, as the model returns them (not normalised).
    vector : np.ndarray, float32, shape (d,)
        L2-normalised mean of ``patch_vectors``.
    intro, outro : np.ndarray, float32, shape (d,)
        L2-normalised first and last patch embeddings.
    tag_probs : np.ndarray, float32, shape (T,)
        Mean tag probability over the patches, in the order of the card's ``tag_labels``.
    timings_s : dict
        Seconds spent: ``decode`` (reading, decoding, resampling), ``mel``, ``inference``,
        ``hash`` (tags and audio hash) and ``total``.
    """

    path: str
    size: int
    mtime_ns: int
    duration_s: float
    tags: dict
    audio_hash: str
    model: str
    patch_starts_s: np.ndarray
    patch_vectors: np.ndarray
    vector: np.ndarray
    intro: np.ndarray
    outro: np.ndarray
    tag_probs: np.ndarray
    timings_s: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# tags
# --------------------------------------------------------------------------------------------


def _first_int(text: str, pattern: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def read_tags(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the common tags with mutagen's "easy" interface (ID3, Vorbis comments, MP4, ...).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    dict
        Any of ``title``, ``artist``, ``album``, ``albumartist``, ``genre`` (str; several
        values joined with ``"; "``), ``year`` (int, the first four-digit number of ``date``)
        and ``tracknumber`` (int, ``"3/12"`` gives 3). Unreadable or broken tags give ``{}``;
        this function never raises for a bad file.
    """
    try:
        import mutagen

        f = mutagen.File(os.fspath(path), easy=True)
    except Exception:  # mutagen raises many types for broken tags; tags are optional
        return {}
    if f is None or not getattr(f, "tags", None):
        return {}
    out: dict[str, Any] = {}
    try:
        items = {str(k).lower(): v for k, v in f.tags.items()}
    except Exception:
        return {}

    def text(key: str) -> str | None:
        values = items.get(key)
        if values is None:
            return None
        if isinstance(values, (list, tuple)):
            values = [str(v).strip() for v in values if str(v).strip()]
            return "; ".join(values) or None
        return str(values).strip() or None

    for key in ("title", "artist", "album", "genre"):
        value = text(key)
        if value:
            out[key] = value
    albumartist = text("albumartist") or text("album artist") or text("album_artist")
    if albumartist:
        out["albumartist"] = albumartist
    date = text("date") or text("year") or text("originaldate")
    if date:
        year = _first_int(date, r"(\d{4})")
        if year is not None:
            out["year"] = year
    track = text("tracknumber")
    if track:
        number = _first_int(track, r"^\s*(\d+)")
        if number is not None:
            out["tracknumber"] = number
    return out


# --------------------------------------------------------------------------------------------
# audio hash
# --------------------------------------------------------------------------------------------


def _syncsafe(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | (b[3] & 0x7F)


def _mp3_audio_span(fh, size: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of an MP3 file without its ID3v2, APEv2, Lyrics3 and ID3v1 tags.

    Tag layouts: ID3v2.4 section 3.1 (10-byte header, syncsafe size, footer flag 0x10 adds a
    10-byte footer; an appended tag ends with a ``3DI`` footer), APEv2 (32-byte ``APETAGEX``
    footer whose size counts the items and the footer; flag bit 31 adds a 32-byte header),
    Lyrics3v2 (``LYRICS200`` preceded by a 6-digit size) and ID3v1 (the last 128 bytes start
    with ``TAG``).
    """
    start = 0
    while start + 10 <= size:  # one or more ID3v2 tags at the start
        fh.seek(start)
        head = fh.read(10)
        if head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
            break
        start += 10 + _syncsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)
    end = size
    tail_len = min(size, 128 + 32 + 32 + 15 + 1024)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    changed = True
    while changed and end > start:
        changed = False
        rel = end - (size - tail_len)  # position of ``end`` in ``tail``
        if rel >= 128 and tail[rel - 128:rel - 125] == b"TAG":
            end -= 128
            changed = True
            continue
        if rel >= 32 and tail[rel - 32:rel - 24] == b"APETAGEX":
            ape_size = int.from_bytes(tail[rel - 20:rel - 16], "little")
            flags = int.from_bytes(tail[rel - 12:rel - 8], "little")
            end -= ape_size + (32 if flags & 0x80000000 else 0)
            changed = True
        elif rel >= 15 and tail[rel - 9:rel] == b"LYRICS200" and tail[rel - 15:rel - 9].isdigit():
            end -= int(tail[rel - 15:rel - 9]) + 15
            changed = True
        elif rel >= 10 and tail[rel - 10:rel - 7] == b"3DI":
            end -= 20 + _syncsafe(tail[rel - 4:rel])
            changed = True
        if changed and end < size - tail_len:  # a tag larger than the tail we read: stop
            break
    return start, max(start, end)


def _pcm_hash(path: str, info: _audio.AudioInfo) -> "hashlib.blake2b":
    """blake2b over int16 native-rate PCM: three 5 s windows (start, middle, end) when the
    decoder can seek, else the first 30 s; plus the rate, channels and length."""
    h = hashlib.blake2b(digest_size=_HASH_BYTES)
    h.update(f"pcm:{info.sample_rate_hz}:{info.channels}:{info.frames}".encode())
    if info.seekable:
        import soundfile as sf

        win = int(5 * info.sample_rate_hz)
        with sf.SoundFile(path) as fh:
            for pos in sorted({0, max(0, info.frames // 2 - win // 2), max(0, info.frames - win)}):
                fh.seek(pos)
                h.update(np.ascontiguousarray(fh.read(win, dtype="int16")).tobytes())
    else:
        with _audio._audioread_open(path) as ar:
            want = 30 * ar.samplerate * max(1, ar.channels) * 2
            got = 0
            for buf in ar:
                h.update(buf[: want - got])
                got += len(buf)
                if got >= want:
                    break
    return h


def audio_hash(path: str | os.PathLike[str], info: _audio.AudioInfo | None = None) -> str:
    """Hash the audio content of a file so that re-tagging it keeps the hash.

    - MP3 (libsndfile says so): blake2b of the bytes between the leading ID3v2 tag(s) and the
      trailing APEv2 / Lyrics3v2 / ID3v1 tags, i.e. the MPEG frames exactly as stored.
    - FLAC with an MD5 in STREAMINFO (every encoder writes it): that MD5 of the decoded audio
      (FLAC format specification, STREAMINFO), hashed again with blake2b.
    - Anything else (WAV, OGG, M4A, ...): blake2b of the decoded int16 PCM at the native rate
      of three 5 s windows (start, middle, end), or of the first 30 s when the file can only be
      decoded from the start (ffmpeg), plus the sample rate, channels and length. Tags live
      outside the audio stream in these containers, so tag edits do not change it.

    Parameters
    ----------
    path : str or PathLike
    info : AudioInfo, optional
        The file's :func:`deejai.engine.audio.info`, when already known.

    Returns
    -------
    str
        32 hex characters (blake2b, 128-bit digest).

    Raises
    ------
    AudioError
        The file cannot be read or decoded.
    """
    p = os.fspath(path)
    info = info or _audio.info(p)
    try:
        if info.format.upper() == "MP3":
            h = hashlib.blake2b(digest_size=_HASH_BYTES)
            h.update(b"mp3:")
            with open(p, "rb") as fh:
                start, end = _mp3_audio_span(fh, os.fstat(fh.fileno()).st_size)
                fh.seek(start)
                left = end - start
                while left > 0:
                    chunk = fh.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    h.update(chunk)
                    left -= len(chunk)
            return h.hexdigest()
        if info.format.upper() == "FLAC":
            try:
                from mutagen.flac import FLAC

                md5 = FLAC(p).info.md5_signature
            except Exception:
                md5 = 0
            if md5:
                h = hashlib.blake2b(digest_size=_HASH_BYTES)
                h.update(b"flac-md5:" + md5.to_bytes(16, "big"))
                return h.hexdigest()
        return _pcm_hash(p, info).hexdigest()
    except OSError as exc:
        raise AudioError(p, f"cannot read: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


def analyse(path: str | os.PathLike[str], model: Any, *, k: int | None = None) -> TrackAnalysis:
    """Analyse one audio file with a model.

    Parameters
    ----------
    path : str or PathLike
        An audio file (anything :func:`deejai.engine.audio.decode` reads).
    model : Model
        A loaded :class:`deejai.engine.model.Model`: ``model.card`` gives the front-end
        settings and name, ``model.predict(patches)`` returns ``{"embedding": (n, d),
        "tags": (n, T)}``.
    k : int or None, keyword-only
        Patches spread over the track; ``None`` means :data:`DEFAULT_PATCHES`, ``0`` means
        every non-overlapping patch (as musicnn's extractor). Fewer are used when the track
        is short (one patch for a track under ~3 s).

    Returns
    -------
    TrackAnalysis

    Raises
    ------
    AudioError, EmptyAudioError, UnsupportedFormatError
        The file is missing, unreadable, empty, truncated or not audio; the message names
        the file and the reason.
    """
    t_start = time.perf_counter()
    p = os.path.abspath(os.fspath(path))
    info = _audio.info(p)  # raises the AudioError family for bad paths and non-audio
    st = os.stat(p)
    card = model.card
    timings: dict[str, float] = {"decode": 0.0, "mel": 0.0}
    patches, starts_s, duration_s = _audio.load_patches(
        p, card, DEFAULT_PATCHES if k is None else k, timings=timings
    )
    t0 = time.perf_counter()
    out = model.predict(patches)
    t_inf = time.perf_counter() - t0
    t0 = time.perf_counter()
    tags = read_tags(p)
    digest = audio_hash(p, info)
    t_hash = time.perf_counter() - t0
    emb = np.asarray(out["embedding"], dtype=np.float32)
    probs = np.asarray(out["tags"], dtype=np.float32)
    return TrackAnalysis(
        path=p,
        size=int(st.st_size),
        mtime_ns=int(st.st_mtime_ns),
        duration_s=float(duration_s),
        tags=tags,
        audio_hash=digest,
        model=str(_audio._card(card, "name", "")),
        patch_starts_s=np.asarray(starts_s, dtype=np.float32),
        patch_vectors=emb,
        vector=l2_normalise(emb.mean(axis=0)),
        intro=l2_normalise(emb[0]),
        outro=l2_normalise(emb[-1]),
        tag_probs=probs.mean(axis=0).astype(np.float32),
        timings_s={
            "decode": timings["decode"],
            "mel": timings["mel"],
            "inference": t_inf,
            "hash": t_hash,
            "total": time.perf_counter() - t_start,
        },
    )


def top_tags(a: TrackAnalysis, labels: Any, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` most probable tags as ``(label, probability)``, most probable first."""
    order = np.argsort(-a.tag_probs, kind="stable")[:n]
    labels = list(labels)
    return [(labels[i] if i < len(labels) else str(i), float(a.tag_probs[i])) for i in order]


def analysis_to_json(a: TrackAnalysis, tag_labels: Any = None, *, vectors: bool = True) -> dict:
    """A JSON-serialisable dict of a :class:`TrackAnalysis` (arrays become lists of floats).

    Parameters
    ----------
    a : TrackAnalysis
    tag_labels : sequence of str, optional
        The model's tag labels; when given, ``tag_probs`` becomes ``{label: probability}`` and
        ``top_tags`` lists the five most probable.
    vectors : bool, keyword-only
        Include ``patch_vectors`` (``k x d`` numbers); ``vector``, ``intro`` and ``outro`` are
        always included.

    Returns
    -------
    dict
    """
    def floats(x: np.ndarray) -> list:
        return np.asarray(x, dtype=np.float64).round(7).tolist()

    out: dict[str, Any] = {
        "path": a.path,
        "size": a.size,
        "mtime_ns": a.mtime_ns,
        "duration_s": round(float(a.duration_s), 3),
        "tags": dict(a.tags),
        "audio_hash": a.audio_hash,
        "model": a.model,
        "patches": int(len(a.patch_starts_s)),
        "patch_starts_s": floats(a.patch_starts_s),
        "vector": floats(a.vector),
        "intro": floats(a.intro),
        "outro": floats(a.outro),
        "timings_s": {k: round(float(v), 4) for k, v in a.timings_s.items()},
    }
    if tag_labels is not None:
        labels = list(tag_labels)
        out["top_tags"] = [{"tag": t, "probability": round(p, 4)} for t, p in top_tags(a, labels)]
        out["tag_probs"] = {labels[i]: round(float(v), 5) for i, v in enumerate(a.tag_probs)}
    else:
        out["tag_probs"] = floats(a.tag_probs)
    if vectors:
        out["patch_vectors"] = floats(a.patch_vectors)
    return out
