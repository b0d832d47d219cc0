"""Click options that send a command's playlist to a sink (MPD), for the playlist commands.

Usage in a command that makes a playlist::

    from deejai.plugins.options import add_sink_options, push_playlist

    @click.command()
    ...
    @add_sink_options
    def playlist(...):
        result = make_the_playlist(...)          # a Playlist or its dict
        push_playlist(result)                    # no-op unless --to-mpd was given

The options are ``--to-mpd``, ``--mpd-host HOST``, ``--mpd-port PORT``, ``--mpd-append``,
``--mpd-save NAME`` and ``--mpd-music-dir DIR``; they are not passed to the command's function
(they are kept in the click context), so adding them changes no signature.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import click

__all__ = ["SINK_META_KEY", "add_sink_options", "sink_request", "push_playlist", "describe_result"]

#: Key of the parsed sink options in ``click.Context.meta``.
SINK_META_KEY = "deejai.plugins.sink_request"

_MPD_PARAMS = ("mpd_host", "mpd_port", "mpd_append", "mpd_save", "mpd_music_dir")


def add_sink_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: add ``--to-mpd`` and its ``--mpd-*`` options to a click command function.

    Apply it below ``@click.command()`` like any ``@click.option``. The parsed options are
    stored in ``click.get_current_context().meta[SINK_META_KEY]`` (see :func:`sink_request`)
    and removed from the keyword arguments the function receives.

    Raises
    ------
    click.UsageError
        (when the command runs) An ``--mpd-*`` option was given without ``--to-mpd``.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        to_mpd = kwargs.pop("to_mpd", False)
        values = {name: kwargs.pop(name, None) for name in _MPD_PARAMS}
        given = [name for name, value in values.items() if value not in (None, False)]
        if given and not to_mpd:
            flag = "--" + given[0].replace("_", "-")
            raise click.UsageError(f"{flag} needs --to-mpd")
        request = None
        if to_mpd:
            request = {
                "sink": "mpd",
                "options": {
                    "host": values["mpd_host"],
                    "port": values["mpd_port"],
                    "mode": "append" if values["mpd_append"] else "replace",
                    "save_as": values["mpd_save"],
                    "music_directory": values["mpd_music_dir"],
                },
            }
        click.get_current_context().meta[SINK_META_KEY] = request
        return f(*args, **kwargs)

    options = [
        click.option("--to-mpd", is_flag=True,
                     help="Also put the playlist into MPD's queue (replacing it)."),
        click.option("--mpd-host", metavar="HOST",
                     help="MPD host or Unix socket path (default: [mpd] host setting)."),
        click.option("--mpd-port", type=click.IntRange(1, 65535), metavar="PORT",
                     help="MPD port (default: [mpd] port setting, 6600)."),
        click.option("--mpd-append", is_flag=True,
                     help="Add to the end of MPD's queue instead of replacing it."),
        click.option("--mpd-save", metavar="NAME",
                     help="Also store the playlist in MPD under NAME."),
        click.option("--mpd-music-dir", type=click.Path(file_okay=False), metavar="DIR",
                     help="MPD's music_directory (default: setting, else asked from MPD)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def sink_request(ctx: click.Context | None = None) -> dict[str, Any] | None:
    """The sink options of the running command: ``{"sink": name, "options": {...}}`` or None."""
    ctx = ctx or click.get_current_context()
    for c in (ctx, *_parents(ctx)):
        if SINK_META_KEY in c.meta:
            return c.meta[SINK_META_KEY]
    return None


def _parents(ctx: click.Context) -> list[click.Context]:
    out = []
    while ctx.parent is not None:
        ctx = ctx.parent
        out.append(ctx)
    return out


def push_playlist(
    playlist: Any,
    ctx: click.Context | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    echo: bool = True,
) -> dict[str, Any] | None:
    """Send ``playlist`` to the sink asked for on the command line, if any.

    Parameters
    ----------
    playlist : Playlist or dict
    ctx : click.Context, optional
        Default: the current context.
    settings : dict, optional
        Default: :func:`deejai.plugins.manager.load_settings`.
    echo : bool
        Print a summary (and each skipped track) on stderr.

    Returns
    -------
    dict or None
        The sink's result (see :func:`deejai.plugins.mpd.send`); ``None`` when no sink option
        was given.

    Raises
    ------
    DeejaiError
        From the sink (``SinkError``, ``ConfigError``, ``PluginError``).
    """
    request = sink_request(ctx)
    if request is None:
        return None
    from deejai.plugins.manager import send_to_sink

    result = send_to_sink(request["sink"], playlist, settings, **request["options"])
    if echo:
        click.echo(describe_result(result), err=True)
    return result


def describe_result(result: Mapping[str, Any]) -> str:
    """Human-readable lines for a sink result (one summary line, then one per skipped track)."""
    where = result.get("server", "")
    verb = "appended" if result.get("mode") == "append" else "queued"
    added = len(result.get("added", []))
    line = f"{result.get('sink', 'sink')} {where}: {verb} {added} track{'s' * (added != 1)}"
    if result.get("queue_length") is not None:
        line += f" (queue: {result['queue_length']})"
    if result.get("saved_as"):
        line += f", saved as {result['saved_as']!r}"
    skipped = result.get("skipped", [])
    lines = [line + (f"; {len(skipped)} skipped:" if skipped else "")]
    lines += [f"  {item['path']}: {item['reason']}" for item in skipped]
    return "\n".join(lines)
