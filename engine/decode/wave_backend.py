"""PCM WAV through the standard library's :mod:`wave` (8/16/24/32-bit integer PCM).

Needs no native library at all, so it runs wherever Python does: the phone profile's tests
use it, and it is the decoder of last resort for WAV files. Seeks are exact (PCM).
"""
from __future__ import annotations

import wave

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source, hash_windows
from deejai.engine.errors import AudioError

__all__ = ["open_file", "WaveSource"]


class WaveSource(Source):
    def __init__(self, path: str):
        self.path = path
        try:
            self.fh = wave.open(path, "rb")
        except (wave.Error, EOFError) as exc:
            raise NotMine(f"not a PCM WAV file ({exc})") from None
        except PermissionError:
            raise AudioError(path, "permission denied") from None
        self.width = self.fh.getsampwidth()
        if self.width not in (1, 2, 3, 4):
            self.fh.close()
            raise NotMine(f"{8 * self.width}-bit WAV samples")
        self.channels = self.fh.getnchannels()
        rate, frames = self.fh.getframerate(), self.fh.getnframes()
        self.info = AudioInfo(path, rate, self.channels, frames, frames / rate if rate else 0.0,
                              "WAV", "wave", True)

    def _read(self, start: int, stop: int) -> np.ndarray:
        try:
            self.fh.setpos(start)
            raw = self.fh.readframes(stop - start)
        except (wave.Error, EOFError, OSError) as exc:
            raise AudioError(self.path, f"decoding failed ({exc})") from None
        w, ch = self.width, self.channels
        n = len(raw) // (w * ch)
        raw = raw[: n * w * ch]
        if w == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif w == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
            x = v.astype(np.float32) / np.float32(2 ** 23)
        else:
            x = np.frombuffer(raw, f"<i{w}").astype(np.float32) / np.float32(2 ** (8 * w - 1))
        x = x.reshape(n, ch)
        return x.mean(axis=1, dtype=np.float32) if ch > 1 else x[:, 0]

    def content_digest(self, h) -> None:
        """The rate, channels, length and the raw PCM bytes of three 5 s windows."""
        info = self.info
        h.update(f"wav:{info.sample_rate_hz}:{info.channels}:{self.width}:{info.frames}".encode())
        for pos, win in hash_windows(info):
            self.fh.setpos(pos)
            h.update(self.fh.readframes(win))

    def close(self) -> None:
        fh = self.__dict__.pop("fh", None)
        if fh is not None:
            fh.close()


def open_file(path: str) -> WaveSource:
    return WaveSource(path)
