"""Play a playlist with Kivy's own audio (``kivy.core.audio.SoundLoader``).

Kivy plays through SDL2_mixer on desktop (MP3, OGG, WAV, FLAC with the PyPI wheels) and through
Android's MediaPlayer on a phone. Where a file cannot be played (no provider, no codec, no
audio device) :meth:`Player.play` returns a reason instead of raising, and the Playlist screen
shows it: playback is a convenience, the playlist and its export work without it.

"Playing" is said only when the sound really plays: SDL2's loader hands back a sound of length
0 that never starts when the mixer could not open a device ("Audio device hasn't been opened"
in the log), so the player checks the sound's state after ``play()``. SDL's null audio driver
(``SDL_AUDIODRIVER=dummy``, as under Xvfb in the tests) plays in silence; the player detects it
(:func:`audio_driver`) and says so.
"""
from __future__ import annotations

import ctypes
import logging
import os
from typing import Any, Callable, Sequence

from kivy.core.audio import SoundLoader

__all__ = ["Player", "audio_driver", "SILENT_DRIVERS"]

log = logging.getLogger(__name__)

#: SDL audio drivers that play without a sound (SDL's null and file drivers).
SILENT_DRIVERS = ("dummy", "disk")


def audio_driver() -> str | None:
    """The SDL audio driver Kivy's audio opened (``"pulseaudio"``, ``"alsa"``, ``"dummy"``...).

    Asks the libSDL2 that Kivy loaded (``SDL_GetCurrentAudioDriver``, found through
    ``/proc/self/maps`` on Linux); else the ``SDL_AUDIODRIVER`` variable; None when unknown or
    when no device is open.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            libs = {line.split()[-1] for line in fh if "libSDL2-2" in line and "/" in line}
    except OSError:
        libs = set()
    for path in sorted(libs):
        try:
            sdl = ctypes.CDLL(path)
            sdl.SDL_GetCurrentAudioDriver.restype = ctypes.c_char_p
            name = sdl.SDL_GetCurrentAudioDriver()
        except (OSError, AttributeError):
            continue
        return name.decode() if name else None
    return os.environ.get("SDL_AUDIODRIVER") or None


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
            return self._cannot(index, f"this device cannot play {path}")
        sound.play()
        if sound.state != "play" or not getattr(sound, "length", 0):
            # SDL2 without a device: a sound of length 0 that never starts
            try:
                sound.unload()
            except Exception:  # pragma: no cover - a provider's own error
                pass
            return self._cannot(index, f"cannot play {os.path.basename(path)}: no audio device "
                                       "could be opened (see the log)")
        self.sound, self.index = sound, index
        sound.bind(on_stop=self._ended)
        message = f"playing {index + 1}/{len(self.paths)}"
        driver = audio_driver()
        if driver in SILENT_DRIVERS:
            message += f" (silent: SDL's {driver!r} audio driver has no speakers)"
        self.on_change(index, message)
        return None

    def _cannot(self, index: int, reason: str) -> str:
        """Nothing plays: say why (index -1: no row is marked as playing; Skip goes on)."""
        self.index = index
        self.on_change(-1, reason)
        return reason

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
