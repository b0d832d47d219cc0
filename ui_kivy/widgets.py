"""Small widgets the screens share: a track picker with search-as-you-type, a distance bar,
a slider with its value shown, and the message bar. Their look lives in ``widgets.kv``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.lang import Builder
from kivy.properties import (
    BooleanProperty,
    ListProperty,
    NumericProperty,
    ObjectProperty,
    StringProperty,
)
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.widget import Widget

from deejai.ui_kivy.viewmodel import track_label, waypoint_spec

__all__ = ["TrackPicker", "DistanceBar", "ValueSlider", "MessageBar", "SuggestionButton"]

#: Seconds the picker waits after the last key press before it asks the engine.
SEARCH_DEBOUNCE_S = 0.25
#: Suggestions shown under a picker.
SUGGESTIONS = 6


class SuggestionButton(Button):
    """One suggested track under a :class:`TrackPicker`."""

    track = ObjectProperty(None, allownone=True)


class TrackPicker(BoxLayout):
    """A text field that suggests tracks while the user types (artist, title or album).

    ``picked`` is the chosen track record (``Engine.tracks`` row) or None; :meth:`spec` is what
    the engine is sent: the id of the picked track, else the typed text as a query.
    """

    hint = StringProperty("artist, title or album")
    title = StringProperty("")
    picked = ObjectProperty(None, allownone=True)
    suggestions = ListProperty([])
    searching = BooleanProperty(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._search = Clock.create_trigger(self._run_search, SEARCH_DEBOUNCE_S)
        self._asked = ""

    def on_text(self, text: str) -> None:
        """Called by the kv TextInput on every change."""
        if self.picked is not None and text == track_label(self.picked):
            return
        self.picked = None
        if text.strip():
            self._search()
        else:
            self.suggestions = []

    def _run_search(self, *_: Any) -> None:
        query = self.ids.field.text.strip()
        if not query:
            return
        self._asked = query
        self.searching = True
        App.get_running_app().call(
            "tracks", query=query, limit=SUGGESTIONS,
            on_result=lambda rows, q=query: self._show(q, rows),
            on_error=lambda exc: setattr(self, "searching", False),
            quiet=True,
        )

    def _show(self, query: str, rows: list[dict]) -> None:
        self.searching = False
        if query != self.ids.field.text.strip():
            return  # the user typed on; a newer search is on its way
        self.suggestions = list(rows)

    def on_suggestions(self, _: Any, rows: list[dict]) -> None:
        box = self.ids.suggestions
        box.clear_widgets()
        for row in rows:
            box.add_widget(SuggestionButton(text=track_label(row), track=row, on_release=self._pick_button))

    def _pick_button(self, button: SuggestionButton) -> None:
        self.pick(button.track)

    def pick(self, track: dict) -> None:
        """Choose ``track`` (a row of ``Engine.tracks``)."""
        self.picked = dict(track)
        self.ids.field.text = track_label(track)
        self.suggestions = []

    def pick_first(self) -> None:
        """Enter in the field: take the first suggestion, if there is one."""
        if self.suggestions:
            self.pick(self.suggestions[0])

    def clear(self) -> None:
        self.picked = None
        self.ids.field.text = ""
        self.suggestions = []

    def spec(self) -> str | int | None:
        """The picked id, the typed query, or None when empty."""
        return waypoint_spec(self.ids.field.text, self.picked)


class DistanceBar(Widget):
    """A horizontal bar whose length shows one step's distance (``fraction`` in [0, 1])."""

    fraction = NumericProperty(0.0)


class ValueSlider(BoxLayout):
    """A labelled slider that shows its value; ``value`` is what the screens read."""

    title = StringProperty("")
    min = NumericProperty(0)
    max = NumericProperty(1)
    step = NumericProperty(0)
    value = NumericProperty(0)
    fmt = StringProperty("{:.0f}")
    shown = StringProperty("0")

    # Kept in Python: a kv expression over both ``fmt`` and ``value`` missed a ``fmt`` set by
    # the parent rule (the label kept showing "0" for a "{:.2f}" slider).
    def on_value(self, *_: Any) -> None:
        self.shown = self.fmt.format(self.value)

    def on_fmt(self, *_: Any) -> None:
        self.shown = self.fmt.format(self.value)


class MessageBar(BoxLayout):
    """One line at the bottom of the window: errors in red, news in grey."""

    text = StringProperty("")
    error = BooleanProperty(False)


def kv_path(name: str) -> str:
    """The kv file ``name`` that sits beside this package's Python modules."""
    return str(Path(__file__).with_name(name))


Builder.load_file(kv_path("widgets.kv"))
