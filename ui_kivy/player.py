"""Play a playlist with Kivy's own audio (``kivy.core.audio.SoundLoader``).

Kivy plays through SDL2_mixer on desktop (MP3, OGG, WAV, FLAC with the PyPI wheels) and through
Android's MediaPlayer on a phone. Where a file cannot be loaded (no provider, no codec, no
audio device) :meth:`Player.play` returns a reason instead of raising, and the Playlist screen
shows it: playback is a convenience, the playlist and its export work without it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from kivy.core.audio import SoundLoader

__all__ = ["Player"]

log = logging.getLogger(__name__)


class Player:
    """Plays the entries of a playlist in order; Skip goes to the next one.

    Parameters
    ----------
    on_change : callable
        ``on_change(index, message)`` after every change: the index playing (-1 when stopped)
        and a line to show.
    """

    def __init__(self, on_change: Callable[[int, str], None]) -> None:
        self.on_change = on_change
        self.paths: list[str] = []
        self.index = -1
        self.sound: Any = None
        self._stopping = False

    @staticmethod
    def available() -> bool:
        """True when Kivy has an audio provider at all."""
        return bool(getattr(SoundLoader, "_classes", None))

    def load(self, paths: Sequence[str]) -> None:
        """Replace the queue (stops what plays)."""
        self.stop(notify=False)
        self.paths = list(paths)
        self.index = -1

    def play(self, index: int = 0) -> str | None:
        """Play entry ``index``; returns None, or the reason it cannot play."""
        self.stop(notify=False)
        if not 0 <= index < len(self.paths):
            self.on_change(-1, "end of the playlist")
            return "end of the playlist"
        path = self.paths[index]
        try:
            sound = SoundLoader.load(path)
        except Exception as exc:  # a provider crashing on a file must not take the app down
            log.warning("cannot load %s: %s", path, exc)
            sound = None
        if sound is None:
            reason = f"this device cannot play {path}"
            self.index = index
            self.on_change(index, reason)
            return reason
        self.sound, self.index = sound, index
        sound.bind(on_stop=self._ended)
        sound.play()
        self.on_change(index, f"playing {index + 1}/{len(self.paths)}")
        return None

    def _ended(self, *_: Any) -> None:
        if self._stopping:
            return
        self.play(self.index + 1)

    def skip(self) -> str | None:
        """Go to the next entry."""
        return self.play(self.index + 1)

    def stop(self, notify: bool = True) -> None:
        """Stop and unload the current sound."""
        sound, self.sound = self.sound, None
        if sound is not None:
            self._stopping = True
            try:
                sound.unbind(on_stop=self._ended)
                sound.stop()
                sound.unload()
            finally:
                self._stopping = False
        if notify:
            self.on_change(-1, "stopped")
