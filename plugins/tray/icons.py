"""The tray icon's pictures: one per state, drawn with Pillow and shipped as PNG files.

The motif is deejai's idea in one glyph: three dots on a disc, joined by a path. The disc's
colour says the state:

=============  ==========  ==============================================================
state          colour      glyph
=============  ==========  ==============================================================
``idle``       blue        three white dots joined by a path
``scanning``   amber       the dots and a white ring that fills up with the scan's progress
``not_running`` grey        hollow dots, no path: nobody is listening (the daemon is down)
``error``      red         a white exclamation mark
=============  ==========  ==============================================================

The PNG files under ``icons/`` (``deejai-<state>-<size>.png``) are what
:func:`draw_icon` draws at the freedesktop icon theme's usual sizes (:data:`SIZES`, from the
`Icon Theme Specification <https://specifications.freedesktop.org/icon-theme-spec/latest/>`_
and the ``hicolor`` theme's folders); ``python -m deejai.plugins.tray.icons`` writes them again.
Drawing happens at four times the size and is reduced with a Lanczos filter, because Pillow's
``ImageDraw`` does not anti-alias.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "COLOURS",
    "ICON_DIR",
    "SIZES",
    "STATES",
    "draw_icon",
    "icon_file",
    "load_icon",
    "write_icons",
]

#: Square pixel sizes of the shipped PNGs (the hicolor theme's usual application icon sizes).
SIZES: tuple[int, ...] = (16, 22, 24, 32, 48, 64, 128, 256)

#: The states the icon shows (see :class:`deejai.plugins.tray.logic.TrayState`).
STATES: tuple[str, ...] = ("idle", "scanning", "not_running", "error")

#: Disc colour of each state, RGB (Material Design palette: blue 600, orange 600, grey 500,
#: red 600).
COLOURS: dict[str, tuple[int, int, int]] = {
    "idle": (0x1E, 0x88, 0xE5),
    "scanning": (0xFB, 0x8C, 0x00),
    "not_running": (0x9E, 0x9E, 0x9E),
    "error": (0xE5, 0x39, 0x35),
}

#: Folder of the shipped PNG files.
ICON_DIR = Path(__file__).resolve().parent / "icons"

_SUPERSAMPLE = 4
#: The three dots, as fractions of the icon's side (a path that climbs and falls back).
_DOTS = ((0.28, 0.64), (0.50, 0.36), (0.72, 0.60))
#: The progress shown by the static ``scanning`` picture (the PNG files).
STATIC_PROGRESS = 0.6


def _check(state: str, size: int) -> None:
    if state not in COLOURS:
        raise ValueError(f"unknown tray icon state {state!r}; known: {', '.join(STATES)}")
    if int(size) < 8:
        raise ValueError(f"icon size must be at least 8 pixels, got {size}")


def draw_icon(state: str, size: int = 64, progress: float | None = None) -> Image.Image:
    """Draw the icon of ``state``.

    Parameters
    ----------
    state : {"idle", "scanning", "not_running", "error"}
        What the icon says.
    size : int
        Side of the square image in pixels (8 or more).
    progress : float, optional
        For ``"scanning"``: the fraction done, 0..1, drawn as a ring that fills clockwise
        from 12 o'clock. ``None`` draws :data:`STATIC_PROGRESS` (the picture the PNG files
        hold). Ignored for the other states.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGBA"``, shape ``(size, size)``, transparent outside the disc.

    Raises
    ------
    ValueError
        For an unknown state or a size under 8.
    """
    from PIL import Image, ImageDraw

    _check(state, size)
    big = int(size) * _SUPERSAMPLE
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    white = (255, 255, 255, 255)
    colour = COLOURS[state] + (255,)
    margin = big * 0.04
    d.ellipse((margin, margin, big - margin, big - margin), fill=colour)
    dot_r = big * 0.085
    line_w = max(1, int(round(big * 0.065)))
    points = [(x * big, y * big) for x, y in _DOTS]

    if state in ("idle", "scanning"):
        d.line(points, fill=white, width=line_w, joint="curve")
        for x, y in points:
            d.ellipse((x - dot_r, y - dot_r, x + dot_r, y + dot_r), fill=white)
    if state == "scanning":
        frac = STATIC_PROGRESS if progress is None else min(1.0, max(0.0, float(progress)))
        ring = big * 0.11
        box = (margin + ring / 2, margin + ring / 2, big - margin - ring / 2,
               big - margin - ring / 2)
        # the track of the ring (the disc colour, darker), then what is done, in white
        track = tuple(int(c * 0.72) for c in COLOURS[state]) + (255,)
        d.arc(box, 0, 360, fill=track, width=int(ring * 0.55))
        if frac > 0:
            d.arc(box, -90, -90 + 360 * frac, fill=white, width=int(ring * 0.55))
    elif state == "not_running":
        outline = max(1, int(round(big * 0.045)))
        for x, y in points:
            d.ellipse((x - dot_r, y - dot_r, x + dot_r, y + dot_r), outline=white, width=outline)
    elif state == "error":
        cx = big / 2
        bar_w = big * 0.13
        d.rounded_rectangle((cx - bar_w / 2, big * 0.20, cx + bar_w / 2, big * 0.60),
                            radius=bar_w / 2, fill=white)
        r = bar_w * 0.62
        cy = big * 0.74
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=white)
    return img.resize((int(size), int(size)), Image.LANCZOS)


def icon_file(state: str, size: int) -> Path:
    """Path of the shipped PNG of ``state`` at ``size`` pixels (it may not exist for odd sizes)."""
    _check(state, size)
    return ICON_DIR / f"deejai-{state}-{int(size)}.png"


def load_icon(state: str, size: int = 64, progress: float | None = None) -> Image.Image:
    """The picture for ``state``: the shipped PNG when there is one, else drawn.

    ``progress`` (for ``"scanning"``) always draws, since the PNG files hold one fixed
    progress. Returns an RGBA image of ``(size, size)`` pixels.
    """
    from PIL import Image

    if not (state == "scanning" and progress is not None):
        path = icon_file(state, size)
        if path.is_file():
            with Image.open(path) as img:
                return img.convert("RGBA")
    return draw_icon(state, size, progress)


def write_icons(folder: Path | str = ICON_DIR) -> list[Path]:
    """Write every state at every size in :data:`SIZES` as ``deejai-<state>-<size>.png``.

    Also writes ``deejai.png`` (the idle icon at 256 px), the application icon the
    ``.desktop`` file points to. Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for state in STATES:
        for size in SIZES:
            path = folder / f"deejai-{state}-{size}.png"
            draw_icon(state, size).save(path, optimize=True)
            out.append(path)
    app = folder / "deejai.png"
    draw_icon("idle", 256).save(app, optimize=True)
    out.append(app)
    return out


def _main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else ICON_DIR
    written = write_icons(folder)
    print(f"wrote {len(written)} icons to {folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
