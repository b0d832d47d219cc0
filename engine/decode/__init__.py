"""Audio decoders behind one interface: a file in, mono float32 samples out.

Every backend opens a file as a :class:`Source`: its :class:`AudioInfo` (native rate,
channels, length in samples, format) and ``read(start, stop)``, the channel mean of native
samples ``[start, stop)``, decoded only around that range when the backend can seek. The
front end (:mod:`deejai.engine.audio`) turns ranges of a source into windows at the model's
rate with :func:`deejai.engine.decode.resample.resample` (soxr where it is installed, else
NumPy), unless the platform decoder already resamples (iOS).

Backends, tried in this order on each platform (:func:`backend_order`)::

    desktop   pyav       FFmpeg through PyAV: MP3 by its own frame index (sample-exact seeks,
                         see :mod:`deejai.engine.decode.mpeg`), other formats by seeking the
                         container; every format FFmpeg reads
              soundfile  libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3 (libsndfile >= 1.1)
              wave       the standard library's WAV reader (PCM WAV only; no native code)
              audioread  FFmpeg as a subprocess; decodes a file whole (last resort)
    Android   android    MediaExtractor + MediaCodec through pyjnius (every device decodes
                         MP3, AAC, FLAC, Vorbis and Opus); then pyav where its recipe builds
    iOS       ios        ExtAudioFile (AudioToolbox) through ctypes, resampling to the
                         model's rate itself; then pyav

``DEEJAI_DECODERS=pyav,wave`` (or :func:`open_source(..., backends=...)`) chooses the order.

Nothing heavy is imported by this module: each backend imports its library when it opens a
file.
"""
from __future__ import annotations

import importlib
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from deejai.engine.errors import AudioError, EmptyAudioError, UnsupportedFormatError

__all__ = [
    "AudioInfo",
    "Source",
    "open_source",
    "backend_order",
    "available_backends",
    "BACKENDS",
    "check_path",
    "hash_windows",
    "NotMine",
]


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its headers without decoding it all.

    Attributes
    ----------
    path : str
        The file.
    sample_rate_hz : int
        Rate of the samples the source returns (Hz): the file's own, or the rate the platform
        decoder converts to.
    channels : int
        Native channel count.
    frames : int
        Samples per channel at ``sample_rate_hz``.
    duration_s : float
        ``frames / sample_rate_hz``.
    format : str
        Container/codec, upper case where it is a common name (``"MP3"``, ``"FLAC"``,
        ``"OGG"``, ``"WAV"``, ``"M4A"``...).
    decoder : str
        The backend: ``"pyav"``, ``"soundfile"``, ``"wave"``, ``"audioread"``, ``"android"``,
        ``"ios"``.
    seekable : bool
        Whether ranges are decoded where they lie (else the file was decoded whole on open).
    """

    path: str
    sample_rate_hz: int
    channels: int
    frames: int
    duration_s: float
    format: str
    decoder: str
    seekable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NotMine(Exception):
    """Raised by a backend's ``open`` when the file is not in a format it reads (the next
    backend is tried); any :class:`AudioError` it raises is final."""


class Source(ABC):
    """One open audio file: mono float32 samples by native index range.

    Subclasses set :attr:`info` in ``__init__`` and implement :meth:`_read`.
    """

    info: AudioInfo
    #: The file's bytes when the backend read them whole (the MP3 audio hash reuses them).
    data: bytes | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Mono samples ``[start, stop)`` at ``info.sample_rate_hz``.

        Returns
        -------
        np.ndarray, float32, shape (<= stop - start,)
            The channel mean; shorter only where the audio data ends before ``stop`` (a
            truncated file). ``start`` and ``stop`` are clipped to ``[0, info.frames]``.

        Raises
        ------
        AudioError
            The data cannot be decoded.
        """
        start, stop = max(0, int(start)), min(int(stop), self.info.frames)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        return self._read(start, stop)

    @abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray:
        """``read`` for ``0 <= start < stop <= info.frames``."""

    def content_digest(self, h: Any) -> None:
        """Feed a hash object what identifies the audio content (the audio hash of non-MP3,
        non-FLAC files): here the rate, channels and length, then three 5 s windows (start,
        middle, end) of the mono samples as 16-bit integers. Backends override it with
        something closer to the stored data."""
        info = self.info
        h.update(f"pcm-mono:{info.sample_rate_hz}:{info.channels}:{info.frames}".encode())
        for pos, win in hash_windows(info):
            x = self.read(pos, pos + win)
            h.update(np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes())

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def hash_windows(info: AudioInfo, seconds: float = 5.0) -> list[tuple[int, int]]:
    """``(start, length)`` of the three windows (start, middle, end) the audio hash of a
    non-MP3, non-FLAC file reads, in samples at ``info.sample_rate_hz``."""
    win = int(seconds * info.sample_rate_hz)
    n = info.frames
    return [(pos, win) for pos in sorted({0, max(0, n // 2 - win // 2), max(0, n - win)})]


def check_path(path: str | os.PathLike[str]) -> str:
    """Raise a one-line :class:`AudioError` when ``path`` is not a readable, non-empty file."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(p, "no such file") from None
    except PermissionError:
        raise AudioError(p, "permission denied") from None
    except OSError as exc:
        raise AudioError(p, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(p, "is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(p, "not a regular file")
    if st.st_size == 0:
        raise EmptyAudioError(p, "file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise AudioError(p, "permission denied")
    return p


#: Backend name -> ``module:function`` that opens a path as a :class:`Source` (raising
#: :class:`NotMine` for a format it does not read, ImportError when its library is missing).
BACKENDS: dict[str, str] = {
    "pyav": "deejai.engine.decode.pyav_backend:open_file",
    "soundfile": "deejai.engine.decode.soundfile_backend:open_file",
    "wave": "deejai.engine.decode.wave_backend:open_file",
    "audioread": "deejai.engine.decode.audioread_backend:open_file",
    "android": "deejai.engine.decode.android:open_file",
    "ios": "deejai.engine.decode.ios:open_file",
}

_ORDER = {
    "android": ("android", "pyav", "wave"),
    "ios": ("ios", "pyav", "wave"),
    "desktop": ("pyav", "soundfile", "wave", "audioread"),
}


def backend_order(platform: str | None = None) -> tuple[str, ...]:
    """Backends tried, in order, on ``platform`` (default: this one); ``DEEJAI_DECODERS``
    (comma-separated names) overrides it."""
    env = os.environ.get("DEEJAI_DECODERS", "").strip()
    if env:
        names = tuple(n.strip() for n in env.split(",") if n.strip())
        unknown = [n for n in names if n not in BACKENDS]
        if unknown:
            from deejai.engine.errors import ConfigError

            raise ConfigError(f"DEEJAI_DECODERS: unknown decoder {unknown[0]!r} "
                              f"(choose from {', '.join(BACKENDS)})")
        return names
    if platform is None:
        from deejai.engine.platforms import current_platform

        platform = current_platform()
    return _ORDER.get(platform, _ORDER["desktop"])


def _opener(name: str) -> Callable[..., Source]:
    """The backend's open function; ImportError when its library is missing here (a module may
    also define ``check_available()``, which raises ImportError where the module imports but
    its platform library is absent, e.g. AudioToolbox off Apple systems)."""
    module, _, func = BACKENDS[name].partition(":")
    mod = importlib.import_module(module)
    check = getattr(mod, "check_available", None)
    if check is not None:
        check()
    return getattr(mod, func)


def available_backends(platform: str | None = None) -> list[str]:
    """The backends of :func:`backend_order` whose library can be imported here."""
    out = []
    for name in backend_order(platform):
        try:
            _opener(name)
        except ImportError:
            continue
        out.append(name)
    return out


def open_source(path: str | os.PathLike[str], *,
                backends: Sequence[str] | None = None,
                sample_rate_hz: int | None = None) -> Source:
    """Open an audio file with the first backend that reads it.

    Parameters
    ----------
    path : str or PathLike
    backends : sequence of str, optional
        Backend names to try, in order (default :func:`backend_order`).
    sample_rate_hz : int, optional
        The rate the caller will resample to. A backend whose platform decoder resamples
        (its open function has ``resamples = True``: iOS's ExtAudioFile) converts to it and
        reports it as ``info.sample_rate_hz``; the others ignore it.

    Returns
    -------
    Source

    Raises
    ------
    AudioError
        Missing, unreadable file, or a decoding failure a backend reported.
    EmptyAudioError
        A 0-byte file or one without samples.
    UnsupportedFormatError
        No available backend reads the file (the message says which were tried).
    """
    p = check_path(path)
    tried: list[str] = []
    reasons: list[str] = []
    for name in backends if backends is not None else backend_order():
        try:
            opener = _opener(name)
        except ImportError:
            continue
        tried.append(name)
        try:
            if sample_rate_hz and getattr(opener, "resamples", False):
                source = opener(p, sample_rate_hz=int(sample_rate_hz))
            else:
                source = opener(p)
        except NotMine as exc:
            if str(exc):
                reasons.append(str(exc))
            continue
        if source.info.frames <= 0:
            source.close()
            raise EmptyAudioError(p, "the file holds no audio samples")
        return source
    if not tried:
        raise UnsupportedFormatError(p, "no audio decoder is installed (pip install av)")
    # one backend's reason says something; several (each "not my format") say nothing more
    detail = f" ({reasons[-1]})" if reasons and len(tried) == 1 else ""
    raise UnsupportedFormatError(
        p, f"not an audio file, or a format no decoder here reads{detail}")
