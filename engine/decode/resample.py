"""Sample-rate conversion: soxr where it is installed, else a NumPy polyphase resampler.

Desktop installs get ``soxr`` at quality ``"HQ"``, the resampler and quality ``librosa.load``
uses by default (``res_type="soxr_hq"``), so the front end matches the reference musicnn's own
extractor runs. Phones have no soxr (python-for-android has no recipe for it); there
:func:`resample_numpy` does the same job in NumPy: a polyphase FIR filter, the Kaiser-windowed
sinc of Smith's bandlimited interpolation (J. O. Smith, "Digital Audio Resampling Home Page",
CCRMA), evaluated as one matrix product per output phase. Its cutoff (half amplitude) sits at
0.9565 of the lower Nyquist frequency, midway in soxr HQ's transition band (passband to 0.913,
stopband from 1.0), with 64 zero crossings a side and Kaiser beta 9.6 (~100 dB stopband): the
log-mel stays within ~1e-3 of soxr HQ in mel bands 0-89 and within ~0.12 in the top bands
(7.3-8 kHz) that see the filters' edges (``tests/test_decode.py``). A shorter filter (24 zero
crossings, cutoff 0.95) left 0.3-0.5 there, enough to move a bright track's embedding to cosine
0.998 of the desktop's; this one keeps every track of the tests' libraries above 0.9999
(``tests/test_phone_profile.py``, ``benchmarks/phone_profile.py``) at 2.6x the multiply-adds.

``DEEJAI_RESAMPLER=numpy`` forces the NumPy resampler (the phone profile uses it on the
desktop).
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np

__all__ = ["resample", "resample_numpy", "resampler_name", "output_length"]

#: soxr quality preset; ``librosa.load``'s default ``res_type="soxr_hq"`` uses the same.
SOXR_QUALITY = "HQ"

#: Zero crossings of the sinc on each side of the centre tap (filter half-length in input
#: periods of the lower rate).
_ZEROS = 64
_KAISER_BETA = 9.6
_ROLLOFF = 0.9565


def output_length(n: int, sr_in: int, sr_out: int) -> int:
    """Samples a resampler returns for ``n`` input samples (rounded to nearest, as soxr)."""
    if sr_in == sr_out:
        return int(n)
    return int(round(n * sr_out / sr_in))


@functools.lru_cache(maxsize=1)
def _soxr():
    if os.environ.get("DEEJAI_RESAMPLER", "").lower() == "numpy":
        return None
    try:
        import soxr
    except ImportError:  # phones: no soxr recipe
        return None
    return soxr


def resampler_name() -> str:
    """``"soxr"`` or ``"numpy"``: what :func:`resample` uses here."""
    return "soxr" if _soxr() is not None else "numpy"


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 ``y`` from ``sr_in`` to ``sr_out`` Hz.

    Returns
    -------
    np.ndarray, float32, shape (output_length(len(y), sr_in, sr_out),)
        Aligned so that output sample ``j`` sits at input time ``j * sr_in / sr_out`` (the
        filters are linear phase and their delay is removed).
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sr_in == sr_out or y.size == 0:
        return y
    soxr = _soxr()
    if soxr is not None:
        return soxr.resample(y, sr_in, sr_out, quality=SOXR_QUALITY).astype(np.float32, copy=False)
    return resample_numpy(y, sr_in, sr_out)


@functools.lru_cache(maxsize=8)
def _polyphase_bank(up: int, down: int) -> tuple[np.ndarray, int]:
    """Filter taps for rational resampling by ``up / down``, one row per output phase.

    Returns
    -------
    bank : np.ndarray, float32, shape (up, taps)
        ``bank[p]`` are the taps of output phase ``p`` applied to ``taps`` consecutive input
        samples.
    half : int
        Input samples before the centre tap.
    """
    cutoff = _ROLLOFF * min(1.0, up / down)  # of the input Nyquist frequency
    half = int(math.ceil(_ZEROS / cutoff))
    taps = 2 * half + 1
    bank = np.empty((up, taps), dtype=np.float64)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    for p in range(up):
        frac = (p * down % up) / up  # fractional input position of phase p
        t = offsets - frac
        x = t / (half + 1)
        kaiser = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - x * x, 0.0, None))) / np.i0(_KAISER_BETA)
        bank[p] = cutoff * np.sinc(cutoff * t) * kaiser
    return bank.astype(np.float32), half


def resample_numpy(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """:func:`resample` without soxr: a Kaiser-windowed sinc polyphase FIR in NumPy.

    Output sample ``j`` is ``sum_k h(k - j * sr_in / sr_out) * y[k]`` with ``h`` the windowed
    sinc at the lower of the two Nyquist frequencies (x 0.9565). The ``up`` phases of the
    ``up / down = sr_out / sr_in`` ratio (reduced by their gcd) each get a row of taps; for
    every phase the input windows are a strided view (no copy) and the filter one matrix-vector
    product, so the cost is ``len(output) * taps`` multiply-adds.
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sr_in == sr_out or y.size == 0:
        return y
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    bank, half = _polyphase_bank(up, down)
    taps = bank.shape[1]
    n_out = output_length(y.shape[0], sr_in, sr_out)
    padded = np.concatenate([np.zeros(half + 1, np.float32), y, np.zeros(half + down + 2, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)
    out = np.empty(n_out, dtype=np.float32)
    for p in range(min(up, n_out)):
        # outputs j = p + up * m: their left input index is b0 + m * down, so their input
        # windows are a strided view (no copy); the pad of half + 1 zeros shifts them by one
        b0 = (p * down) // up
        count = (n_out - p + up - 1) // up
        rows = windows[b0 + 1:b0 + 1 + (count - 1) * down + 1:down]
        out[p::up] = rows @ bank[p]
    return out
