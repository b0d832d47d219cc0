"""The libsndfile backend, through :mod:`soundfile` (WAV, FLAC, OGG/Vorbis, Opus, AIFF and, from
libsndfile 1.1 on, MP3), sample-accurate seeks in all of them.

After a seek, mpg123 (libsndfile's MP3 decoder) may return a few wrong frames: a Layer III
frame's data can start up to 511 bytes back in earlier frames (the bit reservoir, ISO/IEC
11172-3 2.4.3.4), up to ~5 frames at low bit rates, and the IMDCT overlaps the previous
frame. Each read therefore starts ``PREROLL_S`` early and discards that part, so that the kept
samples equal those of a decode from the start (``tests/test_decode.py`` checks it).
"""
from __future__ import annotations

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source, hash_windows
from deejai.engine.errors import AudioError

__all__ = ["open_file", "SoundfileSource", "PREROLL_S"]

import soundfile as sf  # noqa: E402  (ImportError: soundfile is not installed)

#: Seconds decoded and thrown away before each seek target (>= 19 MP3 frames at 44.1 kHz).
PREROLL_S = 0.5


class SoundfileSource(Source):
    """An open ``soundfile.SoundFile``."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fh = sf.SoundFile(path)
        except PermissionError:
            raise AudioError(path, "permission denied") from None
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise NotMine(str(exc).strip().splitlines()[-1] if str(exc).strip() else "") from None
        fh = self.fh
        self.info = AudioInfo(path, int(fh.samplerate), int(fh.channels), int(fh.frames),
                              fh.frames / fh.samplerate if fh.samplerate else 0.0,
                              str(fh.format), "soundfile", True)

    def _read(self, start: int, stop: int) -> np.ndarray:
        fh = self.fh
        preroll = min(start, int(PREROLL_S * fh.samplerate))
        try:
            fh.seek(start - preroll)
            x = fh.read(stop - start + preroll, dtype="float32", always_2d=True)[preroll:]
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(self.path, f"decoding failed at {start / fh.samplerate:.1f} s "
                                        f"({exc})") from None
        return x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]

    def content_digest(self, h) -> None:
        """The rate, channels, length and native interleaved int16 PCM of three 5 s windows
        (start, middle, end): deejai's audio hash of such files since its first release."""
        info = self.info
        h.update(f"pcm:{info.sample_rate_hz}:{info.channels}:{info.frames}".encode())
        for pos, win in hash_windows(info):
            self.fh.seek(pos)
            h.update(np.ascontiguousarray(self.fh.read(win, dtype="int16")).tobytes())

    def close(self) -> None:
        fh = self.__dict__.pop("fh", None)
        if fh is not None:
            fh.close()


def open_file(path: str) -> SoundfileSource:
    return SoundfileSource(path)
