"""The Playlist screen: the result, a bar per step, play/skip, save as M3U8, send to a sink."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import BooleanProperty, DictProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import Screen

from deejai.ui_kivy.viewmodel import default_export_path, playlist_rows, playlist_title
from deejai.ui_kivy.widgets import kv_path

__all__ = ["PlaylistScreen", "PlaylistRow"]


class PlaylistRow(BoxLayout):
    """One entry: position, "artist - title", duration and the distance bar of its step."""

    index = StringProperty("")
    label = StringProperty("")
    duration = StringProperty("")
    distance = StringProperty("")
    fraction = NumericProperty(0.0)
    playing = BooleanProperty(False)
    track_id = NumericProperty(0)
    path = StringProperty("")


class PlaylistScreen(Screen):
    """Shows the last playlist made; plays it, saves it, sends it to a sink plugin."""

    playlist = DictProperty({})
    title = StringProperty("No playlist yet: make one in Join the dots or Radio")
    sink_names = ListProperty([])
    now_playing = StringProperty("")
    playing_index = NumericProperty(-1)
    saved_path = StringProperty("")
    #: "N more below: scroll" while rows are hidden under the list's bottom edge.
    more_text = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._player = None
        from kivy.clock import Clock

        Clock.schedule_once(lambda dt: self.ids.rows.bind(
            scroll_y=self._update_more, height=self._update_more), 0)

    def _update_more(self, *_: Any) -> None:
        """Say how many rows lie below the visible part of the list."""
        from kivy.metrics import dp

        rows = self.ids.rows
        total = len(rows.data)
        visible = int(rows.height // dp(34)) if rows.height > 0 else total
        hidden_below = total - visible
        if hidden_below <= 0:
            self.more_text = ""
            return
        # scroll_y is 1 at the top and 0 at the bottom
        below = int(round(hidden_below * max(0.0, min(1.0, rows.scroll_y))))
        self.more_text = f"{below} more below: scroll" if below > 0 else ""

    # ------------------------------------------------------------ showing
    def show(self, playlist: dict) -> None:
        """Display ``playlist`` (``Playlist.to_dict()``)."""
        self.stop()
        self.playlist = dict(playlist)
        self.title = playlist_title(playlist)
        self.ids.rows.data = playlist_rows(playlist)
        self.ids.rows.scroll_y = 1.0
        self._update_more()
        folder = App.get_running_app().export_dir()
        self.ids.export_path.text = default_export_path(folder, playlist)
        self.saved_path = ""
        self._refresh_sinks()

    def shown_ids(self) -> list[int]:
        """Track ids in the order the list shows them."""
        return [int(row["track_id"]) for row in self.ids.rows.data]

    def _refresh_sinks(self) -> None:
        try:
            from deejai.plugins import manager

            names = sorted(manager.sinks())
        except Exception as exc:  # plugins are optional here; say why there are none
            App.get_running_app().show_message(f"no sinks: {exc}", error=True)
            names = []
        self.sink_names = names
        spinner = self.ids.sink_spinner
        if names and spinner.text not in names:
            spinner.text = names[0]
        elif not names:
            spinner.text = "no sink"

    # ------------------------------------------------------------ playing
    def player(self) -> Any:
        if self._player is None:
            from deejai.ui_kivy.player import Player

            self._player = Player(on_change=self._player_changed)
        return self._player

    def _player_changed(self, index: int, message: str) -> None:
        self.playing_index = index
        rows = self.ids.rows.data
        for i, row in enumerate(rows):
            row["playing"] = i == index
        self.ids.rows.refresh_from_data()
        label = rows[index]["label"] if 0 <= index < len(rows) else ""
        self.now_playing = f"{message}: {label}" if label else message

    def play(self) -> None:
        if not self.playlist:
            App.get_running_app().show_message("make a playlist first", error=True)
            return
        player = self.player()
        player.load([row["path"] for row in self.ids.rows.data])
        reason = player.play(0)
        if reason:
            App.get_running_app().show_message(reason, error=True)

    def skip(self) -> None:
        if self._player is None or self._player.index < 0:
            return self.play()
        reason = self._player.skip()
        if reason:
            App.get_running_app().show_message(reason, error=True)

    def stop(self) -> None:
        if self._player is not None:
            self._player.stop()

    # ------------------------------------------------------------ saving, sending
    def save(self) -> None:
        """Write the playlist as M3U8 (the engine's exporter plugin) to the path shown."""
        app = App.get_running_app()
        if not self.playlist:
            app.show_message("make a playlist first", error=True)
            return
        typed = self.ids.export_path.text.strip()
        # made absolute here, at the edge: the daemon does not share the app's folder
        path = os.path.abspath(os.path.expanduser(typed)) if typed else ""
        if not path:
            app.show_message("type where to save the playlist", error=True)
            return
        if not path.lower().endswith((".m3u8", ".m3u")):
            path += ".m3u8"
        # written by the app itself, where the user said: the daemon writes playlists only
        # into its own playlist folder
        app.run_local(_write_playlist, dict(self.playlist), path, on_result=self._saved)

    def _saved(self, result: dict) -> None:
        self.saved_path = str(result.get("path") or "")
        App.get_running_app().show_message(f"saved {self.saved_path}")

    def send(self) -> None:
        """Send the playlist to the sink chosen in the spinner (e.g. MPD), in this process."""
        app = App.get_running_app()
        name = self.ids.sink_spinner.text
        if not self.playlist or name not in self.sink_names:
            app.show_message("make a playlist and pick a sink first", error=True)
            return
        app.run_local(_send_to_sink, name, dict(self.playlist), on_result=self._sent)

    def _sent(self, report: dict) -> None:
        sent = report.get("sent", report.get("added", "?")) if isinstance(report, dict) else "?"
        App.get_running_app().show_message(f"sent to {self.ids.sink_spinner.text}: {sent} tracks")


def _write_playlist(playlist: dict, path: str) -> dict:
    from deejai.plugins.manager import write_playlist

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {"path": str(write_playlist(playlist, path, format="m3u8")), "format": "m3u8"}


def _send_to_sink(name: str, playlist: dict) -> dict:
    from deejai.plugins.manager import send_to_sink

    return send_to_sink(name, playlist)


Builder.load_file(kv_path("playlist.kv"))
