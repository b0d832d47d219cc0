"""Playback says "playing" only when a sound really plays: Kivy's real audio (SDL2_mixer) in a
subprocess, once with SDL's null audio driver (plays in silence: detected and said) and once
with a driver that has no device here (the sound never starts: said, not "playing")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audiogen import write_mp3

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys, time
from deejai.ui_kivy.player import Player, audio_driver
seen = []
player = Player(on_change=lambda index, message: seen.append([index, message]))
player.load([sys.argv[1], sys.argv[1]])
reason = player.play(0)
time.sleep(0.3)
state = player.sound.state if player.sound is not None else None
player.stop()
print(json.dumps({"reason": reason, "seen": seen, "state": state, "driver": audio_driver()}))
"""


def _play(tmp_path: Path, driver: str) -> dict:
    pytest.importorskip("kivy")
    mp3 = write_mp3(tmp_path / "tone.mp3", seconds=3.0, kind="chord", seed=2)
    env = dict(os.environ, KIVY_NO_ARGS="1", KIVY_HOME=str(tmp_path / "kivy"),
               KIVY_NO_CONSOLELOG="1", KIVY_NO_FILELOG="1", SDL_AUDIODRIVER=driver,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # a driver without a device: ALSA with an empty configuration (no card, no default PCM)
    (tmp_path / "asound.conf").write_text("")
    env["ALSA_CONFIG_PATH"] = str(tmp_path / "asound.conf")
    env.pop("PULSE_SERVER", None)
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(mp3)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_null_audio_device_plays_in_silence_and_says_so(tmp_path):
    out = _play(tmp_path, "dummy")
    assert out["driver"] == "dummy"
    assert out["reason"] is None and out["state"] == "play"
    index, message = out["seen"][0]
    assert index == 0 and message.startswith("playing 1/2") and "silent" in message


def test_no_audio_device_is_never_called_playing(tmp_path):
    out = _play(tmp_path, "alsa")
    assert out["state"] is None
    assert out["reason"] and out["reason"].startswith("cannot play tone.mp3: no audio device")
    assert all(not message.startswith("playing") for _, message in out["seen"]), out["seen"]
    assert all(index == -1 for index, _ in out["seen"])  # no row marked as playing
