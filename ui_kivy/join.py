"""The Join the dots and Radio screens: pick tracks, set the sliders, Make."""
from __future__ import annotations

import random
from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import BooleanProperty
from kivy.uix.screenmanager import Screen

from deejai.ui_kivy.widgets import kv_path

__all__ = ["JoinScreen", "RadioScreen", "new_seed"]


def new_seed() -> int:
    """A fresh random seed for one Make, so the playlist shown can be made again exactly."""
    return random.SystemRandom().randrange(2**31)


class _MakeScreen(Screen):
    """A screen whose Make button sends ``Engine.<method>(**self.request())`` and shows the result."""

    busy = BooleanProperty(False)
    method = ""

    def request(self) -> dict[str, Any] | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def make(self) -> None:
        params = self.request()
        if params is None:
            return
        self.busy = True
        App.get_running_app().call(
            self.method, **params, on_result=self._done,
            on_error=lambda exc: setattr(self, "busy", False),
        )

    def _done(self, playlist: dict) -> None:
        self.busy = False
        App.get_running_app().show_playlist(playlist)


class JoinScreen(_MakeScreen):
    """From, to and an optional via track; tracks between; "Variety" (noise); Make.

    Sends ``Engine.join(waypoints=[from, (via,) to], n=..., noise=..., seed=...)``.
    """

    method = "join"

    def request(self) -> dict[str, Any] | None:
        """The parameters of ``Engine.join`` for what the screen shows, or None with a message."""
        app = App.get_running_app()
        start, via, end = (self.ids[k].spec() for k in ("from_track", "via_track", "to_track"))
        if start is None or end is None:
            app.show_message("pick a From and a To track first", error=True, scope="make")
            return None
        waypoints = [start] + ([via] if via is not None else []) + [end]
        return {
            "waypoints": waypoints,
            "n": int(round(self.ids.n_slider.value)),
            "noise": round(float(self.ids.noise_slider.value), 3),
            "seed": new_seed(),
        }


class RadioScreen(_MakeScreen):
    """A seed track; "Radio length"; "Like the last" N tracks (lookback); "Variety" (noise); Make.

    Sends ``Engine.radio(seeds=[seed], n=..., lookback=..., noise=..., seed=...)``.
    """

    method = "radio"

    def request(self) -> dict[str, Any] | None:
        app = App.get_running_app()
        seed_track = self.ids.seed_track.spec()
        if seed_track is None:
            app.show_message("pick a seed track first", error=True, scope="make")
            return None
        return {
            "seeds": [seed_track],
            "n": int(round(self.ids.n_slider.value)),
            "lookback": int(round(self.ids.lookback_slider.value)),
            "noise": round(float(self.ids.noise_slider.value), 3),
            "seed": new_seed(),
        }


Builder.load_file(kv_path("join.kv"))
