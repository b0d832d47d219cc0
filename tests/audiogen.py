"""Real audio for the tests: synthesised signals written as MP3 by soundfile (libsndfile).

Different ``kind`` and ``seed`` values give audibly (and embedding-wise) different tracks, so a
generated library has structure for the playlist tests to find.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

KINDS = ("chord", "noise", "beat", "chirp", "bass")


def synth(kind: str, seconds: float, sample_rate_hz: int = 44100, seed: int = 0) -> np.ndarray:
    """Synthesise ``seconds`` of audio; returns float32, shape (n, 2), in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate_hz))
    t = np.arange(n, dtype=np.float64) / sample_rate_hz
    base = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    if kind == "chord":
        y = sum(np.sin(2 * np.pi * base * r * t) for r in (1.0, 1.25, 1.5)) / 3
    elif kind == "noise":
        y = rng.standard_normal(n) * 0.3
        # colour it a little so different seeds differ in spectrum
        k = int(rng.integers(2, 40))
        y = np.convolve(y, np.ones(k) / k, mode="same") * np.sqrt(k)
    elif kind == "beat":
        period = 60.0 / float(rng.integers(80, 160))
        env = np.exp(-((t % period) / 0.03))
        y = env * np.sin(2 * np.pi * 60 * t) + 0.2 * env * rng.standard_normal(n)
    elif kind == "chirp":
        f = base * (1 + 3 * t / max(seconds, 1e-3))
        y = np.sin(2 * np.pi * np.cumsum(f) / sample_rate_hz)
    elif kind == "bass":
        y = np.sign(np.sin(2 * np.pi * base / 2 * t)) * 0.5
    elif kind == "silence":
        y = np.zeros(n)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    y = 0.5 * y / max(1e-9, float(np.max(np.abs(y))) if n else 1.0)
    left = y
    right = np.roll(y, 7)
    return np.stack([left, right], axis=1).astype(np.float32)


def write_mp3(
    path: Path | str,
    seconds: float = 5.0,
    kind: str = "chord",
    seed: int = 0,
    sample_rate_hz: int = 44100,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Write a synthesised MP3 with optional ID3 tags (title, artist, album, genre, date...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), synth(kind, seconds, sample_rate_hz, seed), sample_rate_hz, format="MP3")
    if tags:
        from mutagen.easyid3 import EasyID3
        from mutagen.id3 import ID3NoHeaderError

        try:
            audio = EasyID3(str(path))
        except ID3NoHeaderError:
            audio = EasyID3()
        for key, value in tags.items():
            audio[key] = str(value)
        audio.save(str(path))
    return path


def make_library(root: Path | str, n: int = 12, seconds: float = 6.0) -> list[Path]:
    """Write ``n`` tagged MP3s under ``root/<artist>/`` cycling through the synth kinds."""
    root = Path(root)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        artist = f"Artist {i % 4}"
        out.append(
            write_mp3(
                root / artist / f"{i:02d} {kind} {i}.mp3",
                seconds=seconds,
                kind=kind,
                seed=i,
                tags={"artist": artist, "title": f"{kind.title()} {i}", "album": f"Album {i % 3}",
                      "tracknumber": str(i + 1)},
            )
        )
    return out
