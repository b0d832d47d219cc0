"""``deejai playlist`` (join the dots) and ``deejai radio``.

Both call the :class:`~deejai.engine.service.Engine` facade (the daemon when it runs, else in
process) and show the playlist as a table, print it in an export format, or save it with an
exporter plugin (``-o trip.m3u8``: the format comes from the extension unless ``--format``).
"""
from __future__ import annotations

import os
from typing import Any

import click

from deejai.plugins.options import add_sink_options, push_playlist
from deejai.ui_cli.common import console, err_console, format_duration, get_engine

__all__ = ["playlist", "radio", "render_table", "emit"]

TEXT = "text"


def _common_options(func: Any) -> Any:
    """Options shared by ``playlist`` and ``radio`` (applied bottom-up)."""
    options = [
        click.option("--noise", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
                     help="Variety: 0 gives the best playlist; 0.1-0.5 a different good one per "
                          "--seed; 1 and more wander. In units of the library's typical step "
                          "between neighbouring tracks, so it means the same on any library."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Seed of the noise: the same seed gives the same playlist."),
        click.option("--no-repeat-artist", is_flag=True,
                     help="Never the same artist twice in a row."),
        click.option("--max-duration", "max_duration_s", type=click.FloatRange(min=0.0, min_open=True),
                     default=None, metavar="SEC", help="Leave out tracks longer than SEC seconds."),
        click.option("-o", "--output", "output", type=click.Path(dir_okay=False, writable=True),
                     default=None, metavar="FILE",
                     help="Save the playlist; the format follows the extension (.m3u8, .xspf, .json)."),
        click.option("--format", "fmt", default=None, metavar="FORMAT",
                     help="text (a table, the default), or an exporter: m3u8, xspf, json, ..."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def track_spec(spec: str) -> str:
    """A track as typed, with a relative path to an existing file made absolute: here, at the
    edge, once (a daemon does not share this shell's working folder)."""
    if not spec.startswith("tag:") and os.path.exists(spec):
        return os.path.abspath(spec)
    return spec


def render_table(playlist: dict[str, Any], title: str, con: Any = None) -> None:
    """Print ``playlist`` (``Playlist.to_dict()``) as a rich table.

    Columns: position, "artist – title" (the file name when untagged), duration (m:ss) and the
    cosine distance of the step from the previous track.
    """
    from rich.markup import escape
    from rich.table import Table

    con = con or console()
    table = Table(title=escape(title), title_justify="left", expand=False)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("track", overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    total = 0.0
    for pos, entry in enumerate(playlist.get("entries", []), start=1):
        title_ = entry.get("title") or os.path.splitext(os.path.basename(entry.get("path", "")))[0]
        label = f"{entry['artist']} – {title_}" if entry.get("artist") else title_
        total += float(entry.get("duration_s") or 0.0)
        step = "" if pos == 1 else f"{float(entry.get('distance') or 0.0):.3f}"
        table.add_row(str(pos), escape(label), format_duration(entry.get("duration_s")), step)
    table.caption = f"{len(playlist.get('entries', []))} tracks, {format_duration(total)}"
    con.print(table)


def emit(eng: Any, playlist: dict[str, Any], title: str,
         output: str | None, fmt: str | None) -> None:
    """Show, print or save a playlist the way the options ask."""
    fmt = fmt.strip().lower() if fmt else None
    if output is None:
        if fmt in (None, TEXT):
            render_table(playlist, title)
        else:
            result = eng.export(playlist=playlist, format=fmt, path=None)
            click.echo(result["content"], nl=not result["content"].endswith("\n"))
        return
    path = os.path.abspath(os.path.expanduser(output))
    if fmt == TEXT:
        from rich.console import Console

        with open(path, "w", encoding="utf-8") as fh:
            render_table(playlist, title, Console(file=fh, width=120, color_system=None))
        written = {"format": TEXT, "path": path}
    else:
        # written here, by this process, where the user said: the daemon writes playlists
        # only into its playlist folder (playlist.export)
        from deejai.plugins.manager import exporter_for_path, get_exporter, write_playlist

        exporter = get_exporter(fmt) if fmt else exporter_for_path(path)
        target = write_playlist(playlist, path, format=exporter.name)
        written = {"format": exporter.name, "path": str(target)}
    render_table(playlist, title)
    err_console().print(
        f"saved {len(playlist.get('entries', []))} tracks to {written.get('path', path)} "
        f"({written.get('format') or fmt})",
        highlight=False, markup=False,
    )


@click.command("playlist")
@click.option("--from", "start", required=True, metavar="TRACK",
              help="First track: a path, an id (#42) or a few words of artist/title/album.")
@click.option("--to", "end", required=True, metavar="TRACK", help="Last track (same forms).")
@click.option("--via", multiple=True, metavar="TRACK",
              help="A track (or tag:LABEL) to pass through; repeat for more, in order.")
@click.option("-n", "n", type=click.IntRange(min=0), default=8, show_default=True,
              help="Tracks between each pair of consecutive waypoints.")
@_common_options
@click.option("--transitions", is_flag=True,
              help="Match the end of each track to the start of the next.")
@add_sink_options
@click.pass_context
def playlist(ctx: click.Context, start: str, end: str, via: tuple[str, ...], n: int, noise: float,
             seed: int | None, no_repeat_artist: bool, max_duration_s: float | None,
             output: str | None, fmt: str | None, transitions: bool) -> None:
    """Join the dots: a playlist that travels smoothly from one track to another.

    \b
    Waypoints are tracks (path, #id or words) or tags of the model (tag:ambient):
      deejai playlist --from "battle epic" --to "ambient 4" -n 8
      deejai playlist --from "#12" --via tag:ambient --to "frontiers" -o trip.m3u8
    """
    eng = get_engine(ctx)
    waypoints = [start, *via, end]
    result = eng.join(
        waypoints=[track_spec(w) for w in waypoints], n=n, noise=noise, seed=seed,
        no_repeat_artist=no_repeat_artist, max_duration_s=max_duration_s,
        transitions=transitions,
    )
    emit(eng, result, " → ".join(waypoints), output, fmt)
    push_playlist(result, ctx)


@click.command("radio")
@click.argument("seeds", nargs=-1, required=True, metavar="SEED...")
@click.option("-n", "n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Length of the playlist, seeds included.")
@click.option("--lookback", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the last tracks the next one should sound like.")
@_common_options
@add_sink_options
@click.pass_context
def radio(ctx: click.Context, seeds: tuple[str, ...], n: int, lookback: int, noise: float,
          seed: int | None, no_repeat_artist: bool, max_duration_s: float | None,
          output: str | None, fmt: str | None) -> None:
    """Radio: start from one or more seed tracks and keep going (Deej-A.I.'s make-playlist).

    \b
      deejai radio "frontiers" -n 20
      deejai radio "#3" "#17" --noise 0.2 --seed 7 -o evening.xspf
    """
    eng = get_engine(ctx)
    result = eng.radio(
        seeds=[track_spec(s) for s in seeds], n=n, lookback=lookback, noise=noise, seed=seed,
        no_repeat_artist=no_repeat_artist, max_duration_s=max_duration_s,
    )
    emit(eng, result, "radio: " + ", ".join(seeds), output, fmt)
    push_playlist(result, ctx)
