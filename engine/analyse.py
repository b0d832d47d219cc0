"""One audio file in, one :class:`TrackAnalysis` out: tags, duration, audio hash and vectors.

This is the unit of work the scan's worker pool runs::

    analyse(path, model, k=None)
        audio.open_reader      -> one open of the file: info, patch windows, PCM hash
        audio.load_pcm_patches -> k PCM patches spread over the track (a PCM-input model,
                                  whose graph computes the log-mel), or
        audio.load_patches     -> k log-mel patches (a log-mel-input model)
        model.predict          -> per-patch embeddings and tag probabilities
        mutagen                -> tags (title, artist, album, albumartist, genre, year, tracknumber)
        mean + L2 norm   -> track vector; first/last patch -> intro/outro vectors

Broken tags never stop the analysis (the tags are then ``{}``); a file that cannot be decoded
raises an :class:`~deejai.engine.errors.AudioError`.

The audio hash identifies the audio content, so re-tagging a file does not make it a new
track; see :func:`audio_hash`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deejai.engine import audio as _audio
from deejai.engine import decode as _decode
from deejai.engine.catalogue import TAG_FIELDS as TAG_KEYS  # the one list of tag names
from deejai.engine.catalogue import l2_normalise
from deejai.engine.decode.mpeg import tag_span as _mp3_audio_span
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

#: Patches analysed per track when ``k`` is None (defined with the front end, in ``audio``).
DEFAULT_PATCHES = _audio.DEFAULT_PATCHES


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
        Seconds spent: ``decode`` (opening, reading, decoding), ``resample``, ``mel`` (0 for a
        model whose graph computes the log-mel), ``inference``, ``hash`` (tags and audio hash)
        and ``total``.
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


def read_tags(path: str | os.PathLike[str], data: bytes | None = None) -> dict[str, Any]:
    """Read the common tags with mutagen's "easy" interface (ID3, Vorbis comments, MP4, ...).

    Parameters
    ----------
    path : str or PathLike
    data : bytes, optional
        The file's bytes, when a decoder already holds them (the file is then not opened).

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

        if data is not None:
            buf = io.BytesIO(data)
            buf.name = os.fspath(path)  # mutagen also scores the file type by its name
            f = mutagen.File(buf, easy=True)
        else:
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


def _content_hash(path: str, source: Any) -> "hashlib.blake2b":
    """blake2b over what the decoder backend sees of the audio stream (see :func:`audio_hash`)."""
    h = hashlib.blake2b(digest_size=_HASH_BYTES)
    source.content_digest(h)
    return h


def audio_hash(path: str | os.PathLike[str], info: _audio.AudioInfo | None = None, *,
               reader: _audio.AudioReader | None = None) -> str:
    """Hash the audio content of a file so that re-tagging it keeps the hash.

    - MP3 (the decoder says so): blake2b of the bytes between the leading ID3v2 tag(s) and the
      trailing APEv2 / Lyrics3v2 / ID3v1 tags, i.e. the MPEG frames exactly as stored.
    - FLAC with an MD5 in STREAMINFO (every encoder writes it): that MD5 of the decoded audio
      (FLAC format specification, STREAMINFO), hashed again with blake2b.
    - Anything else (WAV, OGG, M4A, ...): what the decoder backend reads of the audio stream
      (:meth:`deejai.engine.decode.Source.content_digest`): with FFmpeg (PyAV) the bytes of the
      audio packets of the first 30 s, as the container stores them; with libsndfile the int16
      PCM of three 5 s windows (start, middle, end); otherwise the PCM of those windows as
      16-bit integers. The codec, sample rate, channels and length are hashed too. Tags live
      outside the audio packets in these containers, so tag edits do not change it; the hash of
      such a file depends on the decoder backend that reads it.

    Parameters
    ----------
    path : str or PathLike
    info : AudioInfo, optional
        The file's :func:`deejai.engine.audio.info`, when already known.
    reader : AudioReader, optional, keyword-only
        The file opened by :func:`deejai.engine.audio.open_reader`; its decoder is reused for
        the PCM hash instead of opening the file again.

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
    with contextlib.ExitStack() as stack:
        source = reader.source if reader is not None else None
        if info is None or (source is None and info.format.upper() not in ("MP3", "FLAC")):
            if source is None:
                source = stack.enter_context(_decode.open_source(p))
            info = source.info
        try:
            if info.format.upper() == "MP3":
                h = hashlib.blake2b(digest_size=_HASH_BYTES)
                h.update(b"mp3:")
                data = getattr(source, "data", None)
                if data is not None:  # the decoder already holds the file's bytes
                    start, end = _mp3_audio_span(io.BytesIO(data), len(data))
                    h.update(memoryview(data)[start:end])
                    return h.hexdigest()
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
            if source is None:
                source = stack.enter_context(_decode.open_source(p))
            return _content_hash(p, source).hexdigest()
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
    card = model.card
    timings: dict[str, float] = {"decode": 0.0, "resample": 0.0, "mel": 0.0}
    # one open of the file serves its info, the patch windows and (for non-MP3) the PCM hash
    with _audio.open_reader(p, card.sample_rate_hz) as reader:
        info = reader.info
        st = os.stat(p)
        load = (_audio.load_pcm_patches if card.input_kind == "pcm" else _audio.load_patches)
        patches, starts_s, duration_s = load(p, card, k, timings=timings, reader=reader)
        t0 = time.perf_counter()
        out = model.predict(patches)
        t_inf = time.perf_counter() - t0
        t0 = time.perf_counter()
        digest = audio_hash(p, info, reader=reader)
        tags = read_tags(p, getattr(reader.source, "data", None))
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
            "resample": timings["resample"],
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
