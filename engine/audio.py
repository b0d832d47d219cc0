"""The model's front end: decode a file, resample it, and cut log-mel patches.

The pipeline is the one the model card describes::

    file --decode--> mono float32 at ``card.sample_rate_hz``
         --log_mel--> (frames, n_mels) float32
         --load_patches--> k patches (k, patch_frames, n_mels) float32

Decoding goes through :mod:`deejai.engine.decode` (FFmpeg through PyAV on the desktop, with
sample-exact MP3 windows; libsndfile, the standard library's WAV reader and audioread as
fallbacks; MediaCodec on Android, ExtAudioFile on iOS). Channels are averaged to mono and
resampled with ``soxr`` at quality ``"HQ"``, the same resampler and quality ``librosa.load``
uses by default (``res_type="soxr_hq"`` since librosa 0.10), so the front end matches the
reference that musicnn's own extractor runs; where soxr is missing (phones) a NumPy polyphase
resampler takes its place (:mod:`deejai.engine.decode.resample`).

The mel spectrogram matches ``librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft,
hop_length=hop, n_mels=n_mels)`` (periodic Hann window, ``center=True`` with zero padding, which is
librosa's default ``pad_mode="constant"`` since 0.10, power 2, Slaney mel scale and Slaney area
normalisation) without importing librosa; the tests check it against librosa.

Patches are decoded where they lie: when the decoder can seek (sample accurately, also in MP3)
only the samples a patch needs are decoded, with a short margin that the resampler needs, so a
ten-minute track costs about what a three-minute one does.

Nothing heavy is imported at module import time: the decoders and :mod:`soxr` load when a file
is opened.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from deejai.engine import decode as _decode
from deejai.engine.decode import AudioInfo
from deejai.engine.decode import resample as _resampling
from deejai.engine.errors import AudioError, EmptyAudioError, ModelError

__all__ = [
    "AudioInfo",
    "info",
    "decode",
    "log_mel",
    "mel_filters",
    "compress",
    "patch_starts",
    "load_patches",
    "load_pcm_patches",
    "open_reader",
    "AudioReader",
    "RESAMPLE_QUALITY",
    "DEFAULT_PATCHES",
]

#: soxr quality preset; ``librosa.load``'s default ``res_type="soxr_hq"`` uses the same.
RESAMPLE_QUALITY = _resampling.SOXR_QUALITY

#: Extra audio decoded on each side of a window so the resampler's edge transient falls
#: outside the samples kept (seconds). soxr "HQ" settles within a few milliseconds.
_RESAMPLE_MARGIN_S = 0.05

#: A seekable file whose data ends this much earlier than its header says is "truncated".
_TRUNCATION_TOLERANCE_S = 1.0

#: Most patches decoded in one read: bounds memory (16 musicnn patches are ~48 s, 17 MB of
#: 44.1 kHz stereo float32) when every patch of a long track is wanted.
_PATCHES_PER_READ = 16

#: Frames per chunk when computing the STFT, to bound memory on long tracks.
_STFT_CHUNK_FRAMES = 4096


# --------------------------------------------------------------------------------------------
# model-card access
# --------------------------------------------------------------------------------------------


def _card(card: Any, name: str, default: Any = None) -> Any:
    """Read a field of a ModelCard (its ``get`` sees typed fields and ``extra``), of a plain
    mapping (key) or of any object (attribute); ``None`` reads as ``default``."""
    if isinstance(card, Mapping) or callable(getattr(card, "get", None)):
        value = card.get(name, default)
    else:
        value = getattr(card, name, default)
    return default if value is None else value


@dataclass(frozen=True)
class _FrontEnd:
    """The card's signal settings, resolved once."""

    sample_rate_hz: int
    n_fft: int
    hop_length: int
    n_mels: int
    patch_frames: int
    fmin_hz: float
    fmax_hz: float
    compression: tuple
    power: float = 2.0
    pad_short: str = "repeat"

    @classmethod
    def of(cls, card: Any) -> "_FrontEnd":
        if isinstance(card, _FrontEnd):
            return card
        sr = int(_card(card, "sample_rate_hz"))
        mel = str(_card(card, "mel", "slaney")).lower()
        if mel != "slaney":
            raise ModelError(f"mel filter bank {mel!r} is not supported (only 'slaney')")
        window = str(_card(card, "window", "hann")).lower()
        if window not in ("hann", "hanning"):
            raise ModelError(f"STFT window {window!r} is not supported (only 'hann')")
        if not _card(card, "center", True):
            raise ModelError("only centred STFT frames (center=true) are supported")
        pad_short = str(_card(card, "pad_short", "repeat")).lower()
        if pad_short not in ("repeat", "zeros"):
            raise ModelError(f"pad_short {pad_short!r} is not supported ('repeat' or 'zeros')")
        return cls(
            sample_rate_hz=sr,
            n_fft=int(_card(card, "n_fft")),
            hop_length=int(_card(card, "hop_length")),
            n_mels=int(_card(card, "n_mels")),
            patch_frames=int(_card(card, "patch_frames")),
            fmin_hz=float(_card(card, "fmin_hz", 0.0)),
            fmax_hz=float(_card(card, "fmax_hz", sr / 2.0)),
            compression=_compression_spec(_card(card, "compression", MUSICNN_COMPRESSION)),
            power=float(_card(card, "power", 2.0)),
            pad_short=pad_short,
        )


# --------------------------------------------------------------------------------------------
# file probing and decoding
# --------------------------------------------------------------------------------------------


def _check_path(path: str | os.PathLike[str]) -> str:
    return _decode.check_path(path)


def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read sample rate, channels and length from the file's headers.

    Parameters
    ----------
    path : str or PathLike
        An audio file.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        The path does not exist, is a folder or cannot be read.
    EmptyAudioError
        The file has 0 bytes or declares no samples.
    UnsupportedFormatError
        No decoder here reads it (:func:`deejai.engine.decode.open_source`).
    """
    with _decode.open_source(path) as source:
        return source.info


def _resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    return _resampling.resample(y, sr_in, sr_out)


def _target_length(native_frames: int, sr_in: int, sr_out: int) -> int:
    """Samples the resampler returns for ``native_frames`` input samples (rounded to nearest)."""
    return _resampling.output_length(native_frames, sr_in, sr_out)


class AudioReader:
    """Reads target-rate sample ranges ``[a, b)`` of one file, zeros outside the track.

    Open one with :func:`open_reader`; ``info`` is the file's :class:`AudioInfo` and ``length``
    its length in target-rate samples.

    For a seekable file each range is decoded from an aligned native position (a multiple of
    ``sr_in / gcd`` samples, which maps to an integer target sample) with a margin on both
    sides, then resampled and trimmed, so a range equals the same slice of a full decode up to
    float rounding. A non-seekable file is decoded once, whole.
    """

    def __init__(self, path: str, sr_out: int, *, backends: Any = None):
        self.path = path
        self.sr_out = sr_out
        self.source = _decode.open_source(path, backends=backends, sample_rate_hz=sr_out)
        self.info = self.source.info
        #: Seconds spent resampling so far (the rest of a read is decoding).
        self.resample_s = 0.0
        self._full: np.ndarray | None = None
        if self.info.seekable:
            self.length = _target_length(self.info.frames, self.info.sample_rate_hz, sr_out)
        else:  # decoded whole by the backend: resample it once
            self._full = self._resample(self.source.read(0, self.info.frames),
                                        self.info.sample_rate_hz)
            self.length = int(self._full.shape[0])
        if self.length <= 0:
            self.close()
            raise EmptyAudioError(path, "the file decodes to no audio samples")

    def close(self) -> None:
        source = self.__dict__.pop("source", None)
        if source is not None:
            source.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _resample(self, x: np.ndarray, sr_in: int) -> np.ndarray:
        t0 = time.perf_counter()
        y = _resample(x, sr_in, self.sr_out)
        self.resample_s += time.perf_counter() - t0
        return y

    def _read_native(self, start: int, stop: int) -> np.ndarray:
        """Mono float32 native samples ``[start, stop)`` (fewer if the data ends early)."""
        return self.source.read(start, stop)

    def read(self, a: int, b: int) -> np.ndarray:
        """Target-rate samples ``[a, b)``; indices outside ``[0, length)`` read as zeros."""
        out = np.zeros(max(0, b - a), dtype=np.float32)
        lo, hi = max(a, 0), min(b, self.length)
        if hi <= lo:
            return out
        if self._full is not None:
            out[lo - a:hi - a] = self._full[lo:hi]
            return out
        sr_in, sr_out = self.info.sample_rate_hz, self.sr_out
        if sr_in == sr_out:
            x = self._read_native(lo, hi)
            self._check_truncated(lo + x.shape[0], hi)
            out[lo - a:lo - a + x.shape[0]] = x
            return out
        g = math.gcd(sr_in, sr_out)
        step_in, step_out = sr_in // g, sr_out // g
        margin = max(1, math.ceil(_RESAMPLE_MARGIN_S * sr_out / step_out))
        k0 = max(0, lo // step_out - margin)
        k1 = -(-hi // step_out) + margin
        n0 = k0 * step_in
        n1 = min(k1 * step_in, self.info.frames)
        x = self._read_native(n0, n1)
        self._check_truncated(_target_length(n0 + x.shape[0], sr_in, sr_out), hi)
        y = self._resample(x, sr_in)
        t0 = k0 * step_out  # target index of y[0]
        take_lo, take_hi = lo - t0, min(hi - t0, y.shape[0])
        if take_hi > take_lo:
            out[lo - a:lo - a + take_hi - take_lo] = y[take_lo:take_hi]
        return out

    def _check_truncated(self, got_end: int, wanted_end: int) -> None:
        missing_s = (wanted_end - got_end) / self.sr_out
        if missing_s > _TRUNCATION_TOLERANCE_S:
            raise AudioError(
                self.path,
                f"truncated or damaged: the header says {self.info.duration_s:.1f} s "
                f"but the audio ends at {got_end / self.sr_out:.1f} s",
            )

    def read_all(self) -> np.ndarray:
        if self._full is not None:
            return self._full
        x = self._read_native(0, self.info.frames)
        got = _target_length(x.shape[0], self.info.sample_rate_hz, self.sr_out)
        self._check_truncated(got, self.length)
        y = self._resample(x, self.info.sample_rate_hz)
        if y.shape[0] < self.length:  # zero-fill a short tail, as read() does
            y = np.concatenate([y, np.zeros(self.length - y.shape[0], np.float32)])
        return y[: self.length]


def open_reader(path: str | os.PathLike[str], sample_rate_hz: int) -> AudioReader:
    """Open an audio file once for its info, its samples (at ``sample_rate_hz``) and its hash.

    Returns
    -------
    AudioReader
        A context manager; ``reader.info`` (:class:`AudioInfo`), ``reader.length`` (samples at
        ``sample_rate_hz``), ``reader.read(a, b)`` (float32 mono samples ``[a, b)``, zeros
        outside the track), ``reader.read_native(a, b)`` (native-rate samples).

    Raises
    ------
    AudioError, EmptyAudioError, UnsupportedFormatError
        As :func:`decode`.
    """
    return AudioReader(_check_path(path), int(sample_rate_hz))


@contextlib.contextmanager
def _reading(path: Any, sample_rate_hz: int, reader: AudioReader | None) -> Iterator[AudioReader]:
    """``reader`` as is (left open), or ``path`` opened for the block."""
    if reader is not None:
        if reader.sr_out != sample_rate_hz:
            raise ValueError(f"the reader decodes at {reader.sr_out} Hz, the card wants "
                             f"{sample_rate_hz} Hz")
        yield reader
        return
    with open_reader(path, sample_rate_hz) as opened:
        yield opened


def decode(
    path: str | os.PathLike[str],
    sample_rate_hz: int,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a file (or a window of it) to mono float32 at ``sample_rate_hz``.

    Parameters
    ----------
    path : str or PathLike
        An audio file: MP3, FLAC, OGG, WAV, ... through libsndfile; other formats (M4A, ...)
        through ffmpeg via audioread.
    sample_rate_hz : int
        Output sample rate (Hz); soxr "HQ" resamples, as ``librosa.load`` does.
    start_s : float, keyword-only
        Start of the window (seconds, >= 0).
    duration_s : float or None, keyword-only
        Length of the window (seconds); ``None`` reads to the end. A window running past the
        end of the track is cut there (no padding).

    Returns
    -------
    y : np.ndarray, float32, shape (n,)
        Mono samples in [-1, 1]: the channel mean, resampled. ``y[i]`` is the sample at time
        ``round(start_s * sample_rate_hz) + i`` of a full decode.
    info : AudioInfo
        The file's native properties.

    Raises
    ------
    AudioError
        Missing, unreadable or truncated file, or a decoding failure.
    EmptyAudioError
        A 0-byte file or one without samples.
    UnsupportedFormatError
        Not an audio file, or no decoder here reads it.
    """
    p = _check_path(path)
    if start_s < 0 or (duration_s is not None and duration_s < 0):
        raise ValueError("start_s and duration_s must be >= 0")
    with AudioReader(p, int(sample_rate_hz)) as reader:
        if start_s == 0 and duration_s is None:
            return reader.read_all(), reader.info
        a = int(round(start_s * sample_rate_hz))
        b = reader.length if duration_s is None else a + int(round(duration_s * sample_rate_hz))
        b = min(b, reader.length)
        return reader.read(a, b) if b > a else np.zeros(0, np.float32), reader.info


# --------------------------------------------------------------------------------------------
# mel spectrogram
# --------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = f / f_sp
    above = f >= min_log_hz
    mel = np.where(above, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
                   mel)
    return mel


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filters(
    sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float = 0.0, fmax_hz: float | None = None
) -> np.ndarray:
    """Triangular mel filter bank on the Slaney mel scale with Slaney area normalisation.

    The same filters as ``librosa.filters.mel(sr=sample_rate_hz, n_fft=n_fft, n_mels=n_mels,
    fmin=fmin_hz, fmax=fmax_hz, htk=False, norm="slaney")``: ``n_mels + 2`` points equally
    spaced on the mel scale of Slaney's Auditory Toolbox (linear, 200/3 Hz per mel, below 1 kHz;
    logarithmic, a factor 6.4 per 27 mels, above), a triangle from point ``i`` to ``i + 2``
    for band ``i``, each scaled by ``2 / (f[i + 2] - f[i])`` so every band has the same area.

    Parameters
    ----------
    sample_rate_hz : int
    n_fft : int
    n_mels : int
    fmin_hz, fmax_hz : float
        Band edges (Hz); ``fmax_hz=None`` is the Nyquist frequency.

    Returns
    -------
    np.ndarray, float32, shape (n_mels, 1 + n_fft // 2)
        Read-only; ``mel_power = power_spectrum @ filters.T``.
    """
    if fmax_hz is None:
        fmax_hz = sample_rate_hz / 2.0
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, 1 + n_fft // 2)
    mels = np.linspace(_hz_to_mel_slaney(fmin_hz), _hz_to_mel_slaney(fmax_hz), n_mels + 2)
    edges_hz = _mel_to_hz_slaney(mels)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n, fftbins=True)``)."""
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    w.setflags(write=False)
    return w


def _compression_spec(spec: Any) -> tuple:
    """Normalise a card's ``compression`` to ``(type, scale, offset)``."""
    if isinstance(spec, tuple):
        return spec
    if isinstance(spec, str):
        k = spec.lower().replace(" ", "")
        if k in ("none", "power", "linear"):
            return ("none", 1.0, 0.0)
        if k.startswith("log10"):  # e.g. "log10(10000*x+1)"
            return ("log10", 10000.0, 1.0)
        raise ModelError(f"unknown mel compression {spec!r}")
    if isinstance(spec, Mapping):
        kind = str(spec.get("type", spec.get("kind", ""))).lower()
        if kind in ("none", "power", "linear"):
            return ("none", 1.0, 0.0)
        if kind == "log10":
            return ("log10", float(spec.get("scale", 1.0)), float(spec.get("offset", 1.0)))
    raise ModelError(f"unknown mel compression {spec!r}")


#: musicnn's compression, ``log10(10000 * mel + 1)`` (``musicnn.extractor.batch_data``).
MUSICNN_COMPRESSION = {"type": "log10", "scale": 10000, "offset": 1}


def compress(mel: np.ndarray, spec: Any = MUSICNN_COMPRESSION) -> np.ndarray:
    """Compress mel power the way the model was trained.

    Parameters
    ----------
    mel : np.ndarray, float32, shape (frames, n_mels)
        Mel power.
    spec : mapping or str
        A card's ``compression``: ``{"type": "log10", "scale": s, "offset": o}`` gives
        ``log10(s * mel + o)`` (musicnn: ``s = 10000, o = 1``, from musicnn's
        ``extractor.batch_data``); ``{"type": "none"}`` leaves the power as is.

    Returns
    -------
    np.ndarray, float32, same shape; finite for silence when ``o > 0``.

    Raises
    ------
    ModelError
        An unknown compression type.
    """
    kind, scale, offset = _compression_spec(spec)
    if kind == "none":
        return np.asarray(mel, dtype=np.float32)
    out = np.multiply(mel, np.float32(scale), dtype=np.float32)
    out += np.float32(offset)
    np.log10(out, out=out)
    return out


@functools.lru_cache(maxsize=1)
def _rfft():
    """``scipy.fft.rfft`` when SciPy is installed (about 4x faster on float32 frames than
    NumPy's), else ``numpy.fft.rfft``; both return complex64 for float32 input."""
    try:
        from scipy import fft as sp_fft
    except ImportError:  # SciPy is optional (phones); NumPy gives the same numbers
        return np.fft.rfft
    return sp_fft.rfft


def _mel_power_frames(y: np.ndarray, fe: _FrontEnd) -> np.ndarray:
    """Mel power of every full ``n_fft`` window of ``y`` at hop ``hop_length`` (no padding)."""
    n_fft, hop = fe.n_fft, fe.hop_length
    n_frames = 1 + (y.shape[0] - n_fft) // hop if y.shape[0] >= n_fft else 0
    fb_t = np.ascontiguousarray(mel_filters(fe.sample_rate_hz, n_fft, fe.n_mels,
                                            fe.fmin_hz, fe.fmax_hz).T)
    out = np.empty((n_frames, fe.n_mels), dtype=np.float32)
    if n_frames == 0:
        return out
    window = _hann(n_fft)
    rfft = _rfft()
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
    for i in range(0, n_frames, _STFT_CHUNK_FRAMES):
        chunk = frames[i:i + _STFT_CHUNK_FRAMES] * window
        spec = rfft(chunk, n=n_fft, axis=1)
        power = spec.real * spec.real
        power += spec.imag * spec.imag
        if fe.power != 2.0:
            power **= fe.power / 2.0
        np.matmul(power.astype(np.float32, copy=False), fb_t, out=out[i:i + chunk.shape[0]])
    return out


def log_mel(y: np.ndarray, card: Any) -> np.ndarray:
    """Compressed mel spectrogram of a whole signal, as the model's card specifies.

    Equals ``compress(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft,
    hop_length=hop, n_mels=n_mels).T)`` (to float32 rounding; the tests check <= 1e-4
    relative): frames centred at ``t = i * hop`` with ``n_fft // 2`` zeros padded on both
    ends, a periodic Hann window, power 2, Slaney mel filters (:func:`mel_filters`).

    Parameters
    ----------
    y : np.ndarray, float, shape (n,)
        Mono samples at ``card.sample_rate_hz``.
    card : ModelCard or mapping
        Needs ``sample_rate_hz``, ``n_fft``, ``hop_length``, ``n_mels``; ``compression``
        (default musicnn's ``log10(10000 x + 1)``, see :func:`compress`); optional
        ``fmin_hz``/``fmax_hz``, ``power`` (default 2), ``mel`` (only ``"slaney"``),
        ``window`` (only ``"hann"``), ``center`` (only true).

    Returns
    -------
    np.ndarray, float32, shape (1 + n // hop_length, n_mels)

    Raises
    ------
    ModelError
        The card asks for a front end this module does not implement (an HTK mel scale, a
        window other than Hann, uncentred frames, an unknown compression).
    """
    fe = _FrontEnd.of(card) if not isinstance(card, _FrontEnd) else card
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    pad = fe.n_fft // 2
    n_frames = 1 + y.shape[0] // fe.hop_length
    padded = np.zeros(y.shape[0] + 2 * pad + fe.n_fft, dtype=np.float32)
    padded[pad:pad + y.shape[0]] = y
    mel = _mel_power_frames(padded, fe)[:n_frames]
    return compress(mel, fe.compression)


# --------------------------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------------------------


#: Patches analysed per track when ``k`` is ``None`` (re-exported as
#: ``deejai.engine.analyse.DEFAULT_PATCHES``), chosen by what a listener notices: the smallest
#: k whose album precision@5 (a track's 5 nearest neighbours from its own album; albums of >= 3
#: tracks, tracks under 10 s left out) is within 0.01 of the all-patch vectors' and whose
#: paired-bootstrap 95 % CI of the difference includes 0 (``benchmarks/patches.py``). On the
#: dev corpus (86 tracks of game soundtracks, 78 queries in 7 albums; msd-musicnn-v2 int8) P@5
#: was 0.628 / 0.641 / 0.679 / 0.677 / 0.674 for k = 4 / 8 / 16 / 32 / all, CIs of the
#: difference -0.079..-0.015 (k=4), -0.062..-0.005 (k=8), -0.018..+0.028 (k=16),
#: -0.010..+0.013 (k=32): k = 16 is the smallest that passes, at half the cost of k = 32.
#: (The earlier rule, top-5 overlap with the all-patch vector, picked 32; it measured noise:
#: two equally good all-patch analyses, half a patch apart, reached only 0.93 on it.) A track
#: with fewer than 16 non-overlapping patches (under ~48 s) is analysed whole.
DEFAULT_PATCHES = 16


def patch_starts(n_frames: int, patch_frames: int, k: int | None) -> np.ndarray:
    """First frame of each patch: ``k`` spread evenly, or every non-overlapping patch.

    Parameters
    ----------
    n_frames : int
        Frames of the whole track's spectrogram (``1 + samples // hop``).
    patch_frames : int
        Frames per patch.
    k : int or None
        ``None``: :data:`DEFAULT_PATCHES`. ``0``: all ``n_frames // patch_frames``
        non-overlapping patches from frame 0, as musicnn's extractor cuts them
        (``input_overlap=False``). Otherwise
        ``min(k, n_frames // patch_frames)`` patches whose starts are spread evenly from
        frame 0 to ``n_frames - patch_frames``, so the first patch is the intro and the last
        ends with the track; they never overlap. One patch (``k == 1``) sits in the middle.

    Returns
    -------
    np.ndarray, int64, shape (k',)
        Increasing start frames; ``[0]`` when the track is shorter than one patch.
    """
    if k is None:
        k = DEFAULT_PATCHES
    if k < 0:
        raise ValueError("k must be >= 0 or None")
    n_all = max(1, n_frames // patch_frames)
    if not k:
        return np.arange(n_all, dtype=np.int64) * patch_frames
    k = min(k, n_all)
    last = max(0, n_frames - patch_frames)
    if k == 1:
        return np.array([last // 2], dtype=np.int64)
    return np.round(np.linspace(0, last, k)).astype(np.int64)


def _regions(
    starts: np.ndarray, patch_frames: int, max_patches: int
) -> Iterator[tuple[int, int]]:
    """Group patch indices whose frame ranges touch or overlap into runs of at most
    ``max_patches``, each decoded with one read."""
    i = 0
    while i < len(starts):
        j = i
        while (j + 1 < len(starts) and j + 1 - i < max_patches
               and starts[j + 1] <= starts[j] + patch_frames):
            j += 1
        yield i, j + 1
        i = j + 1


def load_patches(
    path: str | os.PathLike[str],
    card: Any,
    k: int | None = None,
    *,
    timings: dict[str, float] | None = None,
    reader: "AudioReader | None" = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode a file and cut ``k`` log-mel patches spread over it.

    Each patch equals ``log_mel(y_full, card)[s:s + patch_frames]`` for a full decode
    ``y_full`` (to resampler rounding), but for a seekable file only the samples each patch
    needs are decoded: ``(patch_frames - 1) * hop + n_fft`` samples plus a 50 ms resampler
    margin on each side (the decoder adds what it needs to seek exactly).
    Patches that touch are decoded together, up to 16 per read to bound memory.

    A track shorter than one patch gives one patch: its spectrogram repeated along time until
    it fills ``patch_frames`` (the card's ``pad_short: "repeat"``; ``"zeros"`` pads silence). musicnn's own extractor
    returns no patch at all for such a track (its loop over start frames is empty and it
    fails); repeat-padding is how musicnn's training pipeline filled short clips, and it keeps
    the spectrum of a short jingle where zero padding would mix silence into its embedding.

    Parameters
    ----------
    path : str or PathLike
    card : ModelCard or mapping
        ``sample_rate_hz``, ``n_fft``, ``hop_length``, ``n_mels``, ``patch_frames``,
        ``compression``.
    k : int or None
        Patches wanted; ``None`` for :data:`DEFAULT_PATCHES`, 0 for all non-overlapping patches
        (see :func:`patch_starts`).
    timings : dict, optional, keyword-only
        When given, seconds spent are added to its ``"decode"`` (open, read, decode),
        ``"resample"`` and ``"mel"`` (STFT, filter bank, compression) keys.
    reader : AudioReader, optional, keyword-only
        The file already opened with :func:`open_reader` at the card's rate (it stays open);
        ``path`` is then ignored.

    Returns
    -------
    patches : np.ndarray, float32, shape (k', patch_frames, n_mels)
        ``k' = min(k, max(1, frames // patch_frames))``; silence gives zeros, never NaN.
    starts_s : np.ndarray, float32, shape (k',)
        Start of each patch (seconds from the start of the track; the first frame is centred
        there).
    duration_s : float
        Length of the track (seconds).

    Raises
    ------
    AudioError, EmptyAudioError, UnsupportedFormatError
        As :func:`decode`; a file whose data ends more than 1 s before its header says
        is reported as truncated.
    """
    fe = _FrontEnd.of(card)
    sr, hop, n_fft, P = fe.sample_rate_hz, fe.hop_length, fe.n_fft, fe.patch_frames
    t_decode = t_mel = 0.0
    t0 = time.perf_counter()
    with _reading(path, sr, reader) as reader:
        rs0 = reader.resample_s
        n = reader.length
        duration_s = n / sr
        n_frames = 1 + n // hop
        if n_frames < P:
            y = reader.read_all()
            t1 = time.perf_counter()
            mel = log_mel(y, fe)
            if fe.pad_short == "zeros":
                mel = np.concatenate([mel, np.repeat(compress(np.zeros((1, fe.n_mels), np.float32),
                                                              fe.compression), P, axis=0)])
            patches = np.tile(mel, (-(-P // mel.shape[0]), 1))[None, :P]
            patches = np.ascontiguousarray(patches, dtype=np.float32)
            starts = np.zeros(1, dtype=np.int64)
            t_decode, t_mel = t1 - t0, time.perf_counter() - t1
        else:
            starts = patch_starts(n_frames, P, k)
            patches = np.empty((len(starts), P, fe.n_mels), dtype=np.float32)
            pad = n_fft // 2
            for i, j in _regions(starts, P, _PATCHES_PER_READ):
                f0, f1 = int(starts[i]), int(starts[j - 1]) + P  # frames [f0, f1)
                a = f0 * hop - pad
                b = (f1 - 1) * hop + n_fft - pad
                y = reader.read(a, b)
                t1 = time.perf_counter()
                mel = compress(_mel_power_frames(y, fe), fe.compression)
                for m in range(i, j):
                    s = int(starts[m]) - f0
                    patches[m] = mel[s:s + P]
                t2 = time.perf_counter()
                t_decode += t1 - t0
                t_mel += t2 - t1
                t0 = t2
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + t_decode - (reader.resample_s - rs0)
        timings["resample"] = timings.get("resample", 0.0) + reader.resample_s - rs0
        timings["mel"] = timings.get("mel", 0.0) + t_mel
    return patches, (starts * hop / sr).astype(np.float32), float(duration_s)


def load_pcm_patches(
    path: str | os.PathLike[str],
    card: Any,
    k: int | None = None,
    *,
    timings: dict[str, float] | None = None,
    reader: AudioReader | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode a file and cut ``k`` PCM patches for a model that computes its own log-mel.

    The patches sit where :func:`load_patches` puts its log-mel patches (:func:`patch_starts`),
    and patch ``m`` holds the samples the model's in-graph STFT needs for its frames
    ``s_m .. s_m + patch_frames - 1``: ``[s_m * hop + offset, ... + patch_samples)`` with the
    card's ``patch_offset_samples`` (``-n_fft / 2``: centred frames) and ``patch_samples``
    (``(patch_frames + 1) * hop`` for musicnn), zeros before the start and after the end of the
    track, as a centred STFT of the whole track sees them. Only those windows are decoded and
    resampled; patches that touch are decoded together, up to 16 per read.

    A track shorter than one patch gives one patch: its samples repeated until they fill the
    patch (after the leading ``-offset`` zeros), the PCM counterpart of musicnn's
    ``repeat-pad`` (the card's ``pad_short: "repeat"``; ``"zeros"`` pads silence).

    Parameters
    ----------
    path : str or PathLike
    card : ModelCard or mapping
        ``sample_rate_hz``, ``hop_length``, ``n_fft``, ``patch_frames``, ``patch_samples``,
        ``patch_offset_samples``, ``pad_short``.
    k : int or None
        Patches wanted; ``None`` for :data:`DEFAULT_PATCHES`, 0 for all non-overlapping patches.
    timings : dict, optional, keyword-only
        Seconds spent are added to its ``"decode"`` (open, read, decode) and ``"resample"``
        keys.
    reader : AudioReader, optional, keyword-only
        The file already opened with :func:`open_reader` (left open); ``path`` is then ignored.

    Returns
    -------
    patches : np.ndarray, float32, shape (k', patch_samples)
    starts_s : np.ndarray, float32, shape (k',)
        Time of each patch's first frame centre (seconds from the start of the track).
    duration_s : float

    Raises
    ------
    AudioError, EmptyAudioError, UnsupportedFormatError
        As :func:`decode`.
    ModelError
        The card has no ``patch_samples``.
    """
    fe = _FrontEnd.of(card)
    samples = _card(card, "patch_samples")
    if not samples:
        raise ModelError("the card has no 'patch_samples' (it is not a PCM-input model)")
    samples = int(samples)
    offset = int(_card(card, "patch_offset_samples", -(fe.n_fft // 2)))
    sr, hop, P = fe.sample_rate_hz, fe.hop_length, fe.patch_frames
    t0 = time.perf_counter()
    with _reading(path, sr, reader) as reader:
        rs0 = reader.resample_s
        n = reader.length
        duration_s = n / sr
        n_frames = 1 + n // hop
        if n_frames < P:
            y = reader.read_all()
            lead = max(0, -offset)
            if fe.pad_short == "zeros":
                body = y
            else:
                body = np.tile(y, -(-(samples - lead) // max(1, y.shape[0])))
            patch = np.zeros(samples, dtype=np.float32)
            take = min(samples - lead, body.shape[0])
            patch[lead:lead + take] = body[:take]
            patches = patch[None]
            starts = np.zeros(1, dtype=np.int64)
        else:
            starts = patch_starts(n_frames, P, k)
            patches = np.empty((len(starts), samples), dtype=np.float32)
            for i, j in _regions(starts, P, _PATCHES_PER_READ):
                a = int(starts[i]) * hop + offset
                b = int(starts[j - 1]) * hop + offset + samples
                y = reader.read(a, b)
                for m in range(i, j):
                    s = int(starts[m]) * hop + offset - a
                    patches[m] = y[s:s + samples]
        resampling = reader.resample_s - rs0
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0 - resampling
        timings["resample"] = timings.get("resample", 0.0) + resampling
    return patches, (starts * hop / sr).astype(np.float32), float(duration_s)
