"""The Map screen: the library as dots; tap dots to join them, or start a radio from one.

The points are ``Engine.map()`` (``library.map``: t-SNE or PCA of the embeddings, cached per
library revision). Tapping a dot shows the track and adds it to the waypoints (numbered);
tapping it again removes it. With two or more waypoints the screen asks
``Engine.join(waypoints=[...], n=..., noise=..., seed=...)`` with the Join the dots screen's
"Tracks between" and "Variety": the waypoints are joined by a dashed line while the path is
computed, then the path is drawn and becomes the playlist (the Playlist screen shows it).
"Radio" runs ``Engine.radio`` from the last tapped dot with the Radio screen's settings and
draws its walk. "Play" plays the last tapped track.
"""
from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import BooleanProperty, DictProperty, ListProperty, StringProperty
from kivy.uix.screenmanager import Screen

from deejai.ui_kivy import mapview  # noqa: F401  (the MapView kv class)
from deejai.ui_kivy.mapview import OTHER, PALETTE, colour_groups
from deejai.ui_kivy.widgets import kv_path

__all__ = ["MapScreen"]

#: Colour names shown over the map.
LEGEND_ROWS = 8

HINT = "Tap a dot to see it; tap two or more to join them. Drag to move, pinch to zoom."


class MapScreen(Screen):
    """The library map, its waypoints and the path made from them."""

    points = DictProperty({})
    colour_by = StringProperty("album")
    info = StringProperty(HINT)
    busy = BooleanProperty(False)
    legend = ListProperty([])
    #: The track last tapped (a record built from the map's columns), or {}.
    current = DictProperty({})
    revision = -1

    def on_enter(self, *_: Any) -> None:
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Ask the engine for the map (again when the library changed or ``force``)."""
        app = App.get_running_app()
        app.call("map", on_result=self._loaded, quiet=False)

    def _loaded(self, points: dict) -> None:
        if points.get("revision") == self.revision and self.points:
            return
        self.revision = points.get("revision", -1)
        self.points = dict(points)
        self._row_of = {int(t): r for r, t in enumerate(points.get("ids", []))}
        keep = [t for t in self.ids.view.selection if int(t) in self._row_of]
        self.ids.view.selection = keep
        self.ids.view.path = [t for t in self.ids.view.path if int(t) in self._row_of]
        self.recolour()
        method = {"tsne": "t-SNE", "pca": "PCA"}.get(points.get("method"), "?")
        if not keep:
            self.info = f"{points.get('count', 0)} tracks ({method}). {HINT}"

    def recolour(self, colour_by: str | None = None) -> None:
        """Colour the dots by "album" or "tag" (the most probable tag of each track)."""
        if colour_by:
            self.colour_by = colour_by
        p = self.points
        if not p:
            return
        groups, names = colour_groups(p.get(self.colour_by) or [""] * len(p["ids"]))
        colours = [OTHER if n == "other" else PALETTE[i % len(PALETTE)] for i, n in enumerate(names)]
        self.legend = [(n, c) for n, c in zip(names, colours)]
        self._show_legend()
        self.ids.view.set_points(p["ids"], p["x"], p["y"], groups, colours)

    def _show_legend(self) -> None:
        """The colours' names, over the map's top-left corner (at most LEGEND_ROWS)."""
        from kivy.factory import Factory

        box = self.ids.legend
        box.clear_widgets()
        rows = self.legend[:LEGEND_ROWS]
        hidden = len(self.legend) - len(rows)
        entries = [(name, (*colour[:3], 1)) for name, colour in rows]
        if hidden > 0:
            entries.append((f"and {hidden} more", (0, 0, 0, 0)))
        for text, rgba in entries:
            row = Factory.LegendRow()  # a kv class: its properties are set after creation
            row.text, row.rgba = text, rgba
            box.add_widget(row)

    # ---------------------------------------------------------------- taps
    def track(self, track_id: int) -> dict:
        """The map's columns for one track, as a small record."""
        r = self._row_of[int(track_id)]
        p = self.points
        return {"id": int(track_id), "artist": p["artist"][r], "title": p["title"][r],
                "album": p["album"][r], "tag": p["tag"][r]}

    @staticmethod
    def _label(rec: dict) -> str:
        name = f"{rec['artist']} – {rec['title']}" if rec.get("artist") else rec.get("title", "")
        extra = ", ".join(x for x in (rec.get("album"), rec.get("tag")) if x)
        return f"{name} ({extra})" if extra else name

    def on_tap(self, track_id: int) -> None:
        """A dot was tapped: show it and add it to (or take it off) the waypoints."""
        view = self.ids.view
        rec = self.track(track_id)
        self.current = rec
        selection = list(view.selection)
        if track_id in selection:
            selection.remove(track_id)
            self.info = f"removed: {self._label(rec)}"
        else:
            selection.append(track_id)
            self.info = f"{len(selection)}. {self._label(rec)}"
        view.selection = selection
        view.path = []
        if len(selection) >= 2:
            self.join()

    def join(self) -> None:
        """Join the waypoints (the Join the dots screen's "Tracks between" and "Variety")."""
        from deejai.ui_kivy.join import new_seed

        app = App.get_running_app()
        view = self.ids.view
        join_screen = app.root.ids.join
        params = {
            "waypoints": [int(t) for t in view.selection],
            "n": int(round(join_screen.ids.n_slider.value)),
            "noise": round(float(join_screen.ids.noise_slider.value), 3),
            "seed": new_seed(),
        }
        self._make("join", params, f"joining {len(view.selection)} dots...")

    def radio(self) -> None:
        """A radio from the last tapped dot (the Radio screen's settings); draws its walk."""
        from deejai.ui_kivy.join import new_seed

        app = App.get_running_app()
        if not self.current:
            app.show_message("tap a dot first", error=True)
            return
        radio_screen = app.root.ids.radio
        self.ids.view.selection = [self.current["id"]]
        params = {
            "seeds": [self.current["id"]],
            "n": int(round(radio_screen.ids.n_slider.value)),
            "lookback": int(round(radio_screen.ids.lookback_slider.value)),
            "noise": round(float(radio_screen.ids.noise_slider.value), 3),
            "seed": new_seed(),
        }
        self._make("radio", params, "radio from " + self._label(self.current) + "...")

    def _make(self, method: str, params: dict, doing: str) -> None:
        app = App.get_running_app()
        view = self.ids.view
        self.busy = True
        view.pending = 1
        self.info = doing
        wanted = list(view.selection)

        def done(playlist: dict) -> None:
            self.busy = False
            view.pending = 0
            if list(view.selection) != wanted:  # tapped on meanwhile: a newer request follows
                return
            view.path = [int(e["id"]) for e in playlist.get("entries", [])]
            app.root.ids.playlist.show(playlist)
            first, last = self.track(view.path[0]), self.track(view.path[-1])
            self.info = (f"{len(view.path)} tracks from {first['title']} to {last['title']}: "
                         "the Playlist screen plays and saves them")

        def failed(_exc: BaseException) -> None:
            self.busy = False
            view.pending = 0
            self.info = HINT

        app.call(method, on_result=done, on_error=failed, **params)

    def clear(self) -> None:
        """Forget the waypoints and the path."""
        self.ids.view.selection = []
        self.ids.view.path = []
        self.current = {}
        self.info = HINT

    def play(self) -> None:
        """Play the last tapped track (through the Playlist screen's player)."""
        app = App.get_running_app()
        if not self.current:
            app.show_message("tap a dot first", error=True)
            return
        app.call("track", track=self.current["id"], on_result=self._play_record)

    def _play_record(self, record: dict) -> None:
        if getattr(self, "_player", None) is None:
            from deejai.ui_kivy.player import Player

            self._player = Player(on_change=self._played)
        app = App.get_running_app()
        app.root.ids.playlist.stop()  # one thing plays at a time
        self._player.load([record["path"]])
        self._playing = self._label(self.current)
        reason = self._player.play(0)
        if reason:
            app.show_message(reason, error=True)

    def _played(self, index: int, message: str) -> None:
        if index >= 0:
            App.get_running_app().show_message(f"{message}: {self._playing}")

    def on_leave(self, *_: Any) -> None:
        if getattr(self, "_player", None) is not None:
            self._player.stop(notify=False)


Builder.load_file(kv_path("map.kv"))
