"""``deejai map``: the library as dots, with the last playlist's path, drawn to a picture.

The points come from ``library.map`` (:meth:`deejai.engine.service.Engine.map`); the picture is
drawn with matplotlib (the ``map`` extra) on its Agg canvas, so no display is needed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import click

from deejai.engine.errors import DeejaiError
from deejai.engine.hints import install_hint
from deejai.ui_cli.common import err_console, get_engine

__all__ = ["map_command", "draw_map", "colour_groups"]

#: Colours get names for this many albums or tags; the rest are "other" (grey).
MAX_GROUPS = 12


def colour_groups(labels: Sequence[str], limit: int = MAX_GROUPS) -> tuple[list[int], list[str]]:
    """Group index per track (the ``limit`` most common labels, then "other").

    Returns
    -------
    groups : list of int
        One per label: an index into ``names``.
    names : list of str
        The group names, most common first; "other" last when some labels were folded into it,
        "(none)" for empty labels.
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
    return [index.get(lab or "(none)", other) for lab in labels], names


def read_playlist_ids(path: Path) -> list[int]:
    """Track ids of a playlist JSON file (``Playlist.to_dict()``, as ``-o x.json`` writes)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [int(e["id"]) for e in data.get("entries", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeejaiError(f"{path}: not a deejai playlist ({exc})") from None


def draw_map(points: dict[str, Any], output: Path, *, path_ids: Sequence[int] = (),
             colour: str = "album", size: tuple[int, int] = (1200, 900),
             title: str | None = None) -> Path:
    """Draw a ``library.map`` result to an image file (the extension picks the format).

    Parameters
    ----------
    points : dict
        From :meth:`Engine.map`: ``ids``, ``x``, ``y``, ``album``, ``tag``, ...
    output : Path
        ``.png``, ``.svg``, ``.pdf`` (what matplotlib writes).
    path_ids : sequence of int
        A playlist's track ids, in order: drawn as a line through their dots, the first and
        last track marked and named. Ids not on the map are skipped.
    colour : {"album", "tag"}
        What the dots' colours say.
    size : (int, int)
        Width and height in pixels (at 100 dpi).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    ids = [int(i) for i in points["ids"]]
    x, y = points["x"], points["y"]
    groups, names = colour_groups(points.get(colour) or [""] * len(ids))
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab20"]
    colours = [cmap(g % 20) if names[g] != "other" else (0.7, 0.7, 0.7, 1.0) for g in groups]
    dot = max(4.0, min(40.0, 40000.0 / max(1, len(ids))))
    ax.scatter(x, y, s=dot, c=colours, linewidths=0, alpha=0.85, zorder=2)
    for g, name in enumerate(names):
        c = cmap(g % 20) if name != "other" else (0.7, 0.7, 0.7, 1.0)
        ax.scatter([], [], s=30, color=c, label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title=colour)
    where = {tid: j for j, tid in enumerate(ids)}
    on_map = [where[i] for i in path_ids if int(i) in where]
    if on_map:
        px, py = [x[j] for j in on_map], [y[j] for j in on_map]
        ax.plot(px, py, "-", color="black", linewidth=1.6, zorder=3)
        ax.scatter(px, py, s=max(dot * 2.5, 30), facecolors="white", edgecolors="black",
                   linewidths=1.2, zorder=4)
        for pos, j in enumerate(on_map, start=1):
            ax.annotate(str(pos), (x[j], y[j]), fontsize=7, ha="center", va="center", zorder=5)
        for j in (on_map[0], on_map[-1]):
            ax.annotate(points.get("title", [""] * len(ids))[j], (x[j], y[j]),
                        xytext=(8, 8), textcoords="offset points", fontsize=9, zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8})
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title is None:
        method = {"tsne": "t-SNE", "pca": "PCA"}.get(points.get("method"), "?")
        title = f"{len(ids)} tracks ({method} of the embeddings)"
        if on_map:
            names = points.get("title") or [""] * len(ids)
            title += f"; the path of {len(on_map)}: {names[on_map[0]]} → {names[on_map[-1]]}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(output))
    return output


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 1200x900") from None
    if not (100 <= w <= 10000 and 100 <= h <= 10000):
        raise click.BadParameter("width and height must be 100 to 10000 pixels")
    return w, h


@click.command("map")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True),
              metavar="FILE", help="The picture to write (.png, .svg or .pdf).")
@click.option("--colour", "--color", "colour", type=click.Choice(["album", "tag"]),
              default="album", show_default=True, help="Colour the dots by album or by top tag.")
@click.option("--playlist", "playlist_file", type=click.Path(exists=True, dir_okay=False),
              default=None, metavar="FILE",
              help="Draw this playlist (a .json from -o) instead of the last one made.")
@click.option("--no-path", is_flag=True, help="Draw the dots only.")
@click.option("--method", type=click.Choice(["auto", "tsne", "pca"]), default="auto",
              show_default=True, help="Projection: t-SNE (needs openTSNE) or PCA.")
@click.option("--size", "size", default="1200x900", show_default=True, metavar="WxH",
              help="Picture size in pixels.")
@click.pass_context
def map_command(ctx: click.Context, output: str, colour: str, playlist_file: str | None,
                no_path: bool, method: str, size: str) -> None:
    """Draw the library as a map of dots, with the last playlist's path through them.

    Every track is a dot; tracks that sound alike sit close together (t-SNE of the
    embeddings where openTSNE is installed, else PCA). The line joins the tracks of the last
    playlist made by `deejai playlist`, `deejai radio` or any front end, in order.

    \b
      deejai playlist --from "battle epic" --to "nebula" -n 8
      deejai map -o map.png
      deejai map -o tags.svg --colour tag --no-path

    Needs matplotlib: pip install ".[map]" in the source folder (or "deejai[map]").
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DeejaiError(
            f"deejai map needs matplotlib: {install_hint('map')}") from None
    width_height = _size(size)
    eng = get_engine(ctx)
    points = eng.map(method=method)
    path_ids: list[int] = []
    label = ""
    if not no_path:
        if playlist_file:
            source = Path(playlist_file)
        else:
            from deejai.engine.config import paths
            from deejai.engine.service import LAST_PLAYLIST_NAME

            source = paths().state_dir / LAST_PLAYLIST_NAME
        if source.exists():
            path_ids = read_playlist_ids(source)
            label = f", the path of {len(path_ids)} tracks from {source.name}"
        elif playlist_file is None:
            label = " (no playlist made yet: dots only)"
    target = Path(os.path.abspath(os.path.expanduser(output)))
    try:
        draw_map(points, target, path_ids=path_ids, colour=colour, size=width_height)
    except (OSError, ValueError) as exc:
        raise DeejaiError(f"{target}: cannot write the map ({exc})") from None
    err_console().print(f"saved the map of {points['count']} tracks ({points['method']}){label} "
                        f"to {target}", highlight=False, markup=False)
