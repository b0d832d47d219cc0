"""Last resort: :mod:`audioread`, which runs FFmpeg (or GStreamer, Core Audio) and streams the
whole file; the file is decoded once, on open, and ranges are served from memory."""
from __future__ import annotations

import functools

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source
from deejai.engine.errors import AudioError, EmptyAudioError

__all__ = ["open_file", "AudioreadSource"]

import audioread  # noqa: E402  (ImportError: audioread is not installed)


@functools.lru_cache(maxsize=1)
def _backends() -> tuple:
    return tuple(audioread.available_backends())


class AudioreadSource(Source):
    def __init__(self, path: str):
        self.path = path
        chunks: list[np.ndarray] = []  # mono float32, downmixed buffer by buffer
        rest = b""
        try:
            with audioread.audio_open(path, backends=_backends()) as ar:
                sr, ch = int(ar.samplerate), max(1, int(ar.channels))
                frame_bytes = 2 * ch  # 16-bit little-endian interleaved PCM
                for buf in ar:
                    data = rest + bytes(buf)
                    usable = len(data) - len(data) % frame_bytes
                    rest = data[usable:]
                    pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, ch)
                    chunks.append(pcm.mean(axis=1, dtype=np.float32) / np.float32(32768.0))
        except (audioread.NoBackendError, EOFError) as exc:
            raise NotMine(str(exc).strip().splitlines()[-1] if str(exc).strip() else "") from None
        except audioread.DecodeError as exc:
            if not chunks:
                raise NotMine(str(exc).strip().splitlines()[-1] if str(exc).strip() else "") from None
            raise AudioError(path, f"decoding failed ({exc})") from None
        except OSError as exc:
            raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
        y = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if y.shape[0] == 0:
            raise EmptyAudioError(path, "the file decodes to no audio samples")
        self._y = y
        self.info = AudioInfo(path, sr, ch, int(y.shape[0]), y.shape[0] / sr, "FFMPEG",
                              "audioread", False)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._y[start:stop]


def open_file(path: str) -> AudioreadSource:
    return AudioreadSource(path)
