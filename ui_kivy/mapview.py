"""A widget that draws the library map: thousands of dots, panned and pinch-zoomed, tapped.

Drawing (what keeps 20,000 dots smooth on a phone-sized window):

* the dots are textured quads (a round, anti-aliased dot texture) in a few ``Mesh``
  instructions, one per colour group and per 16,000 dots (a Mesh's indices are 16-bit), drawn
  into an offscreen ``Fbo`` that covers the widget and a margin of :data:`MARGIN` around it;
* a frame draws that Fbo's texture as one rectangle under one ``Translate`` + ``Scale``, so
  panning and pinch-zooming cost one textured quad whatever the number of dots;
* the Fbo is drawn again (the dots rebuilt at the new zoom, NumPy) only when a gesture ends,
  or when the view has left the margin or zoomed more than :data:`RESIZE_RATIO` away from
  the picture, at most once a frame;
* the overlay (the path, the chosen waypoints and their numbers) is a handful of points in
  widget coordinates, redrawn after each move.

``benchmarks/map_frames.py`` measures the frame time.

Touch: one finger (or the mouse) pans; two fingers pinch-zoom around their midpoint; the mouse
wheel zooms at the pointer; a touch that does not move (:data:`TAP_SLOP_PX`) is a tap on the
nearest dot within :data:`TAP_RADIUS_DP`, reported as ``on_tap_track(track_id)``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from kivy.clock import Clock
from kivy.core.text import Label as CoreLabel
from kivy.graphics import (
    ClearBuffers,
    ClearColor,
    Color,
    Ellipse,
    Fbo,
    InstructionGroup,
    Line,
    Mesh,
    PopMatrix,
    PushMatrix,
    Rectangle,
    Scale,
    Translate,
)
from kivy.graphics.texture import Texture
from kivy.metrics import dp
from kivy.properties import ListProperty, NumericProperty
from kivy.uix.stencilview import StencilView

__all__ = ["MapView", "PALETTE", "colour_groups", "RESIZE_RATIO", "TAP_SLOP_PX", "TAP_RADIUS_DP"]

#: Dots per Mesh: 4 vertices each, and a Mesh's indices are unsigned 16-bit.
DOTS_PER_MESH = 16_000
#: Draw the dots again when the zoom is this factor away from the picture's.
RESIZE_RATIO = 1.25
#: The offscreen picture covers the widget plus this share of its size on each side.
MARGIN = 0.25
#: The map's background colour.
BACKGROUND = (0.07, 0.08, 0.10, 1)
#: A touch that moves less than this (pixels) is a tap.
TAP_SLOP_PX = 12
#: A tap picks the nearest dot within this distance.
TAP_RADIUS_DP = 18
#: Colours of the groups (Tableau 10, as matplotlib's ``tab10``); "other" is grey.
PALETTE = [
    (0.12, 0.47, 0.71), (1.00, 0.50, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81), (0.68, 0.78, 0.91), (1.00, 0.73, 0.47), (0.60, 0.87, 0.54),
]
OTHER = (0.55, 0.55, 0.55)


def colour_groups(labels: Sequence[str], limit: int = len(PALETTE)) -> tuple[np.ndarray, list[str]]:
    """Group per track: the ``limit`` most common labels get a colour, the rest are "other".

    Returns
    -------
    groups : np.ndarray, int64, shape (N,)
        Index into ``names``.
    names : list of str
        Most common first; "other" last when some labels were folded into it.
    """
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab or "(none)"] = counts.get(lab or "(none)", 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    names = ranked[:limit]
    index = {name: i for i, name in enumerate(names)}
    if len(ranked) > limit:
        names.append("other")
    other = len(names) - 1
    return np.fromiter((index.get(lab or "(none)", other) for lab in labels), dtype=np.int64,
                       count=len(labels)), names


def _dot_texture(size: int = 32) -> Texture:
    """A white anti-aliased disc on transparent black (RGBA)."""
    r = (np.arange(size) + 0.5 - size / 2) / (size / 2)
    d = np.sqrt(r[None, :] ** 2 + r[:, None] ** 2)
    alpha = np.clip((1.0 - d) * size / 2, 0, 1)
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    tex = Texture.create(size=(size, size), colorfmt="rgba")
    tex.blit_buffer(rgba.tobytes(), colorfmt="rgba", bufferfmt="ubyte")
    tex.mag_filter = tex.min_filter = "linear"
    return tex


def _quads(xy: np.ndarray, half: float) -> tuple[list[float], list[int]]:
    """Vertices (x, y, u, v per corner) and triangle indices of one square per point."""
    n = len(xy)
    corners = np.array([[-1, -1, 0, 0], [1, -1, 1, 0], [1, 1, 1, 1], [-1, 1, 0, 1]],
                       dtype=np.float32)
    v = np.empty((n, 4, 4), dtype=np.float32)
    v[:, :, 0] = xy[:, None, 0] + half * corners[None, :, 0]
    v[:, :, 1] = xy[:, None, 1] + half * corners[None, :, 1]
    v[:, :, 2] = corners[None, :, 2]
    v[:, :, 3] = corners[None, :, 3]
    base = (np.arange(n, dtype=np.int64) * 4)[:, None]
    idx = (base + np.array([0, 1, 2, 2, 3, 0])[None, :]).ravel()
    return v.ravel().tolist(), idx.tolist()


class MapView(StencilView):
    """The dots of a library map, with pan, zoom, taps and an overlay for a path.

    Set the data with :meth:`set_points`; ``selection`` (track ids, numbered in order) and
    ``path`` (track ids, joined by a line) are drawn over the dots; ``pending`` draws the
    selection joined by a thin straight line while a path is being computed.

    Events
    ------
    on_tap_track(track_id)
        A tap landed on (near) a dot.
    """

    selection = ListProperty([])
    path = ListProperty([])
    pending = NumericProperty(0)
    #: Dot diameter in pixels (dp).
    dot_size = NumericProperty(dp(7))
    #: Pixels per map unit; the map is [-1, 1]² wide.
    zoom = NumericProperty(1.0)

    __events__ = ("on_tap_track",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ids_array = np.zeros(0, dtype=np.int64)
        self.xy = np.zeros((0, 2), dtype=np.float32)
        self.groups = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self.centre = np.zeros(2, dtype=np.float64)  # the map point at the widget's centre
        self._built_zoom = 0.0
        self._user_moved = False  # until the person pans or zooms, the map fits the widget
        self._texture = _dot_texture()
        self._touches: dict[Any, tuple[float, float]] = {}
        self._moved: dict[Any, float] = {}
        self._gesture = False
        self._picture = (0.0, np.zeros(2), (0, 0))  # zoom, centre, widget size drawn for
        self._fbo = Fbo(size=(16, 16))
        with self._fbo:
            ClearColor(*BACKGROUND)
            ClearBuffers()
            self._fbo_translate = Translate(0, 0)
            self._fbo_scale = Scale(1, 1, 1)
            self._dots = InstructionGroup()
        with self.canvas:  # clipped to the widget by StencilView
            Color(*BACKGROUND)
            self._bg = Rectangle(pos=self.pos, size=self.size)
            PushMatrix()
            self._translate = Translate(0, 0)
            self._scale = Scale(1, 1, 1)
            Color(1, 1, 1, 1)
            self._image = Rectangle(texture=self._fbo.texture, pos=(0, 0), size=(16, 16))
            PopMatrix()
            self._overlay = InstructionGroup()
        self.canvas.before.add(self._fbo)
        self._redraw_overlay = Clock.create_trigger(lambda dt: self._draw_overlay(), -1)
        self._redraw_dots = Clock.create_trigger(lambda dt: self._draw_picture(), -1)
        self.bind(pos=self._layout, size=self._layout, selection=self._redraw_overlay,
                  path=self._redraw_overlay, pending=self._redraw_overlay)

    # ---------------------------------------------------------------- data
    def set_points(self, ids: Sequence[int], x: Sequence[float], y: Sequence[float],
                   groups: Sequence[int] | np.ndarray,
                   colours: Sequence[Sequence[float]]) -> None:
        """The dots: track ids, map coordinates in [-1, 1], colour group and group colours."""
        self.ids_array = np.asarray(ids, dtype=np.int64)
        self.xy = np.stack([np.asarray(x, np.float32), np.asarray(y, np.float32)], axis=1) \
            if len(self.ids_array) else np.zeros((0, 2), np.float32)
        self.groups = np.asarray(groups, dtype=np.int64)
        self.colours = [tuple(c) for c in colours]
        self._row_of = {int(t): r for r, t in enumerate(self.ids_array)}
        self._built_zoom = 0.0
        if not self._user_moved:
            self.fit()
        self._draw_picture()
        self._redraw_overlay()

    def fit(self) -> None:
        """Show the whole map."""
        self.centre[:] = 0.0
        self.zoom = max(1.0, 0.44 * min(self.width, self.height))
        self._user_moved = False
        self._apply_transform()

    # ---------------------------------------------------------------- coordinates
    def dot_window_pos(self, track_id: int) -> tuple[float, float] | None:
        """Window coordinates of a track's dot (None when it is not on the map)."""
        r = self._row_of.get(int(track_id))
        if r is None:
            return None
        sx, sy = self._screen(self.xy[r:r + 1])[0]
        wx, wy = self.to_window(float(sx), float(sy))
        return float(wx), float(wy)

    def _screen(self, xy: np.ndarray) -> np.ndarray:
        """Widget-parent coordinates of map points."""
        c = np.asarray(self.center, dtype=np.float64)
        return c + (np.asarray(xy, np.float64) - self.centre) * self.zoom

    def track_at(self, x: float, y: float) -> int | None:
        """The track whose dot is nearest to ``(x, y)`` (parent coordinates), within reach."""
        if not len(self.xy):
            return None
        d = ((self._screen(self.xy) - np.array([x, y])) ** 2).sum(axis=1)
        r = int(np.argmin(d))
        return int(self.ids_array[r]) if d[r] <= dp(TAP_RADIUS_DP) ** 2 else None

    # ---------------------------------------------------------------- drawing
    def _layout(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        if not self._user_moved:
            self.fit()
        self._apply_transform()

    def _apply_transform(self) -> None:
        """Place the picture for the current zoom and centre; ask for a new one when needed."""
        z = float(self.zoom)
        z0, c0, size0 = self._picture
        cx, cy = self.center
        if z0 > 0:
            # picture pixel f shows map point c0 + (f - half) / z0; on screen it goes to
            # centre + (c0 - c) * z + (f - half) * z / z0
            w0, h0 = self._fbo.size
            k = z / z0
            self._scale.x = self._scale.y = k
            self._translate.x = cx + (c0[0] - self.centre[0]) * z - w0 / 2 * k
            self._translate.y = cy + (c0[1] - self.centre[1]) * z - h0 / 2 * k
            off = np.abs(self.centre - c0) * z
            outside = (off[0] > MARGIN * self.width or off[1] > MARGIN * self.height
                       or tuple(size0) != (int(self.width), int(self.height)))
            if not self._gesture and (outside or k > RESIZE_RATIO or k < 1 / RESIZE_RATIO):
                self._redraw_dots()
            elif outside and (k > RESIZE_RATIO ** 2 or k < RESIZE_RATIO ** -2 or
                              off[0] > 2 * MARGIN * self.width or off[1] > 2 * MARGIN * self.height):
                self._redraw_dots()  # mid-gesture, but the picture no longer covers the view
        self._redraw_overlay()

    def _draw_picture(self) -> None:
        """Draw the dots into the offscreen picture for the current zoom and centre."""
        w, h = max(1, int(self.width)), max(1, int(self.height))
        fw, fh = int(w * (1 + 2 * MARGIN)), int(h * (1 + 2 * MARGIN))
        if tuple(self._fbo.size) != (fw, fh):
            self._fbo.size = (fw, fh)
            self._image.texture = self._fbo.texture
        self._image.size = (fw, fh)
        z = float(self.zoom)
        self._fbo_scale.x = self._fbo_scale.y = z
        self._fbo_translate.x = fw / 2 - self.centre[0] * z
        self._fbo_translate.y = fh / 2 - self.centre[1] * z
        if z != self._built_zoom:
            self._build_dots()
        self._picture = (z, self.centre.copy(), (w, h))
        self._fbo.ask_update()
        self._apply_transform()

    def _build_dots(self) -> None:
        self._dots.clear()
        self._built_zoom = float(self.zoom)
        if not len(self.xy):
            return
        half = float(self.dot_size) / 2.0 / self._built_zoom
        for g in range(int(self.groups.max()) + 1 if len(self.groups) else 0):
            rows = np.nonzero(self.groups == g)[0]
            if not len(rows):
                continue
            colour = self.colours[g] if g < len(self.colours) else OTHER
            self._dots.add(Color(*colour[:3], 0.9))
            for s in range(0, len(rows), DOTS_PER_MESH):
                vertices, indices = _quads(self.xy[rows[s:s + DOTS_PER_MESH]], half)
                self._dots.add(Mesh(vertices=vertices, indices=indices, mode="triangles",
                                    texture=self._texture))

    def _draw_overlay(self) -> None:
        o = self._overlay
        o.clear()
        sel = [self._row_of[t] for t in self.selection if int(t) in self._row_of]
        path = [self._row_of[t] for t in self.path if int(t) in self._row_of]
        if path:
            pts = self._screen(self.xy[path])
            o.add(Color(1, 1, 1, 0.95))
            o.add(Line(points=pts.ravel().tolist(), width=dp(1.6), joint="round"))
            for px, py in pts:
                o.add(Color(1, 1, 1, 1))
                o.add(Ellipse(pos=(px - dp(4), py - dp(4)), size=(dp(8), dp(8))))
        elif self.pending and len(sel) >= 2:
            pts = self._screen(self.xy[sel])
            o.add(Color(1, 1, 1, 0.6))
            o.add(Line(points=pts.ravel().tolist(), width=1, dash_length=6, dash_offset=4))
        for number, r in enumerate(sel, start=1):
            px, py = self._screen(self.xy[r:r + 1])[0]
            o.add(Color(1, 0.85, 0.2, 1))
            o.add(Line(circle=(px, py, dp(10)), width=dp(1.8)))
            label = CoreLabel(text=str(number), font_size=dp(12), bold=True)
            label.refresh()
            tex = label.texture
            o.add(Color(1, 1, 1, 1))
            o.add(Rectangle(texture=tex, size=tex.size,
                            pos=(px + dp(9), py + dp(6))))

    # ---------------------------------------------------------------- touch
    def zoom_at(self, factor: float, x: float, y: float) -> None:
        """Zoom by ``factor`` keeping the map point under ``(x, y)`` (parent coords) in place."""
        old = float(self.zoom)
        new = min(max(old * factor, 0.2 * min(self.width, self.height)), 2000.0 * max(1.0, self.width))
        if new == old:
            return
        c = np.asarray(self.center, np.float64)
        p = np.array([x, y], np.float64)
        under = self.centre + (p - c) / old
        self.zoom = new
        self.centre = under - (p - c) / new
        self._user_moved = True
        self._apply_transform()

    def pan(self, dx: float, dy: float) -> None:
        """Move the map by ``(dx, dy)`` pixels."""
        self.centre = self.centre - np.array([dx, dy], np.float64) / float(self.zoom)
        self._user_moved = True
        self._apply_transform()

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return super().on_touch_down(touch)
        if touch.is_mouse_scrolling:
            factor = 1.2 if touch.button in ("scrolldown", "scrollleft") else 1 / 1.2
            self.zoom_at(factor, *touch.pos)
            return True
        touch.grab(self)
        self._touches[touch.uid] = touch.pos
        self._moved[touch.uid] = 0.0
        self._gesture = len(self._touches) >= 2
        return True

    def on_touch_move(self, touch: Any) -> bool:
        if touch.grab_current is not self or touch.uid not in self._touches:
            return super().on_touch_move(touch)
        prev = self._touches[touch.uid]
        self._moved[touch.uid] += math.hypot(touch.x - prev[0], touch.y - prev[1])
        if len(self._touches) >= 2:
            other_uid = next(u for u in self._touches if u != touch.uid)
            other = self._touches[other_uid]
            before = math.hypot(prev[0] - other[0], prev[1] - other[1])
            after = math.hypot(touch.x - other[0], touch.y - other[1])
            mid_before = ((prev[0] + other[0]) / 2, (prev[1] + other[1]) / 2)
            mid_after = ((touch.x + other[0]) / 2, (touch.y + other[1]) / 2)
            self._gesture = True
            if before > 1 and after > 1:
                self.zoom_at(after / before, *mid_before)
            self.pan(mid_after[0] - mid_before[0], mid_after[1] - mid_before[1])
        elif self._moved[touch.uid] > TAP_SLOP_PX:
            self.pan(touch.x - prev[0], touch.y - prev[1])
        self._touches[touch.uid] = touch.pos
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return super().on_touch_up(touch)
        touch.ungrab(self)
        moved = self._moved.pop(touch.uid, 0.0)
        was_gesture = self._gesture or len(self._touches) > 1
        self._touches.pop(touch.uid, None)
        if not self._touches:
            self._gesture = False
            self._apply_transform()  # resize the dots for the zoom the gesture ended on
        if moved <= TAP_SLOP_PX and not was_gesture:
            track = self.track_at(*touch.pos)
            if track is not None:
                self.dispatch("on_tap_track", track)
        return True

    def on_tap_track(self, track_id: int) -> None:
        """Default handler: nothing."""
