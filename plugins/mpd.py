"""Built-in plugin: the ``mpd`` sink, which puts a playlist into Music Player Daemon's queue.

MPD (https://www.musicpd.org/) names songs by URIs relative to its ``music_directory``; deejai
knows absolute paths. :func:`send` maps one to the other, checks that MPD's database has each
song (``lsinfo``), then replaces or extends the queue in one command list, and can also store
the playlist under a name (``playlistadd``). Tracks outside the music directory, or not (yet) in
MPD's database, are listed in the result with the reason; nothing is dropped silently.

Settings (``settings.toml``; each also as ``DEEJAI_MPD__<KEY>``)::

    [mpd]
    host = "localhost"          # or the path of MPD's Unix socket, e.g. "/run/mpd/socket"
    port = 6600
    music_directory = ""        # empty: ask MPD (it answers only over its local socket)
    password = ""

The configured ``password`` is sent only to the configured MPD (the same ``host`` and
``port``): a request that names another MPD must bring its own password, so a client of the
daemon cannot make it hand the password to a host of the client's choosing.

The protocol is spoken by python-mpd2 (LGPL, the ``mpd`` extra: ``pip install "deejai[mpd]"``);
the commands used are documented at https://mpd.readthedocs.io/en/latest/protocol.html.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

import msgspec

from deejai.engine.errors import ConfigError, PluginError, SinkError
from deejai.engine.hints import install_hint
from deejai.plugins.hookspecs import Sink, hookimpl

if TYPE_CHECKING:  # pragma: no cover - the catalogue imports NumPy; the CLI starts without it
    from deejai.engine.catalogue import Playlist

__all__ = ["send", "track_uri", "MODES", "DEFAULT_PORT", "MpdSettings", "register_sinks",
           "register_rpc_methods", "register_settings"]

#: Queue modes: ``replace`` clears MPD's queue first, ``append`` adds at its end.
MODES = ("replace", "append")
#: MPD's IANA-registered TCP port.
DEFAULT_PORT = 6600


class MpdSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[mpd]`` section of settings.toml."""

    host: Annotated[str, msgspec.Meta(description=(
        "MPD host name, or the path of its Unix socket (e.g. /run/mpd/socket)."))] = "localhost"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="MPD TCP port.")] = 6600
    music_directory: Annotated[str, msgspec.Meta(description=(
        "MPD's music_directory as this machine sees it; empty: ask MPD (it answers only "
        "over its local socket)."), extra={"path": True})] = ""
    password: Annotated[str, msgspec.Meta(description="MPD password; empty: none.")] = ""


def _import_mpd() -> Any:
    try:
        import mpd  # python-mpd2
    except ImportError:
        raise PluginError(
            f"the mpd sink needs python-mpd2: {install_hint('mpd')}"
        ) from None
    return mpd


def _is_socket(host: str) -> bool:
    # python-mpd2 treats "/path" as a Unix socket and "@name" as an abstract one.
    return host.startswith(("/", "@"))


def track_uri(path: str | os.PathLike[str], music_directory: str | os.PathLike[str]) -> str | None:
    """MPD's URI for the file ``path``: its path relative to ``music_directory``, with ``/``.

    Symbolic links are tried both unresolved and resolved (a music folder reached through a
    link still matches).

    Parameters
    ----------
    path : path-like
        A track's path (absolute, as deejai stores it).
    music_directory : path-like
        MPD's ``music_directory``.

    Returns
    -------
    str or None
        E.g. ``"Artist/01 Song.mp3"``; ``None`` when ``path`` is not under the music directory.
    """
    music = Path(os.path.abspath(os.path.expanduser(os.fspath(music_directory))))
    target = Path(os.path.abspath(os.fspath(path)))
    for base, file in ((music, target), (Path(os.path.realpath(music)),
                                         Path(os.path.realpath(target)))):
        if file.is_relative_to(base) and file != base:
            return file.relative_to(base).as_posix()
    return None


def send(
    playlist: Playlist | Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    mode: str = "replace",
    save_as: str | None = None,
    music_directory: str | os.PathLike[str] | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Put ``playlist`` into MPD's queue, and optionally store it as an MPD playlist.

    Parameters
    ----------
    playlist : Playlist or dict
        The playlist (or its :meth:`~deejai.engine.catalogue.Playlist.to_dict` form).
    settings : dict, optional
        The ``[mpd]`` section of the settings (a sink receives its own section): the defaults
        of ``host``, ``port``, ``music_directory`` and ``password``.
    host : str, optional
        MPD's host name, or the path of its Unix socket (default: the setting).
    port : int, optional
        MPD's TCP port (default: the setting, else 6600).
    mode : {"replace", "append"}
        Replace the queue, or add at its end. In ``replace`` mode the queue is left as it was
        when no track can be sent.
    save_as : str, optional
        Also store the tracks (only deejai's, whatever ``mode``) as the MPD stored playlist of
        this name, replacing one of the same name.
    music_directory : path-like, optional
        MPD's music folder as this machine sees it. Default: the setting, else MPD's own
        answer to ``config`` (given only to clients on its local socket).
    password : str, optional
        MPD password. Default: the setting, but only when ``host`` and ``port`` are those of
        the settings (compared as written: ``localhost`` is not ``127.0.0.1``); another MPD
        gets no password unless one is given here.
    timeout_s : float
        Socket timeout in seconds.

    Returns
    -------
    dict
        ``{"sink": "mpd", "server": str, "mode": str, "music_directory": str,
        "added": [uri, ...], "skipped": [{"path": str, "reason": str}, ...],
        "saved_as": str or None, "queue_length": int}``. ``added`` is in playlist order.

    Raises
    ------
    ConfigError
        Bad ``mode``, or the music directory is unknown (not set and MPD will not tell).
    SinkError
        MPD cannot be reached, refuses the password or a command, or knows none of the tracks.
    PluginError
        python-mpd2 is not installed.
    """
    if mode not in MODES:
        raise ConfigError(f"MPD queue mode must be one of {', '.join(MODES)}, got {mode!r}")
    from deejai.engine.catalogue import Playlist

    if not isinstance(playlist, Playlist):
        playlist = Playlist.from_dict(dict(playlist))
    cfg = dict(settings or {})
    configured = _endpoint(cfg.get("host"), cfg.get("port"))
    host = str(host or cfg.get("host") or "localhost")
    port = int(port or cfg.get("port") or DEFAULT_PORT)
    withheld = False
    if not password:
        password = cfg.get("password") or None
        if password and _endpoint(host, port) != configured:
            password, withheld = None, True  # the configured password is not for this MPD
    server = host if _is_socket(host) else f"{host}:{port}"

    mpd = _import_mpd()
    client = mpd.MPDClient()
    client.timeout = timeout_s
    try:
        client.connect(host, port)
    except (OSError, mpd.ConnectionError) as exc:
        raise SinkError(f"cannot connect to MPD at {server}: {exc}") from None
    try:
        return _send(mpd, client, playlist, cfg, server=server, mode=mode, save_as=save_as,
                     music_directory=music_directory, password=password)
    except mpd.CommandError as exc:
        hint = (f" (the configured password is sent only to {_shown(configured)}; give the "
                "password of this MPD with the request)") if withheld else ""
        raise SinkError(f"MPD at {server} refused: {exc}{hint}") from None
    except (OSError, mpd.ConnectionError) as exc:
        raise SinkError(f"lost the connection to MPD at {server}: {exc}") from None
    except SinkError as exc:
        if withheld:
            raise SinkError(f"{exc} (the configured password is sent only to "
                            f"{_shown(configured)}; this MPD got none)") from None
        raise
    finally:
        try:
            client.disconnect()
        except Exception:  # pragma: no cover - the socket is gone already
            pass


def _endpoint(host: Any, port: Any) -> tuple[str, int]:
    """``(host, port)`` as the settings or a request name an MPD, for comparing them: the
    defaults filled in, the host case-folded, a socket path made absolute (its port unused)."""
    h = str(host or "localhost")
    if _is_socket(h):
        return (os.path.abspath(h) if h.startswith("/") else h, 0)
    return (h.casefold(), int(port or DEFAULT_PORT))


def _shown(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return host if _is_socket(host) else f"{host}:{port}"


def _send(mpd: Any, client: Any, playlist: Playlist, cfg: dict[str, Any], *, server: str,
          mode: str, save_as: str | None, music_directory: Any, password: str | None
          ) -> dict[str, Any]:
    if password:
        client.password(password)
    music = music_directory or cfg.get("music_directory") or None
    if not music:
        try:
            answer = client.config()  # "music_directory: <path>"; python-mpd2 gives the value
        except mpd.CommandError:  # ACK 4 "Command only permitted to local clients"
            answer = None
        music = answer.get("music_directory") if isinstance(answer, dict) else answer
    if not music:
        raise ConfigError(
            f"MPD at {server} does not tell its music directory to remote clients: set "
            "music_directory in the [mpd] table of settings.toml (or pass --mpd-music-dir)"
        )
    music = os.path.expanduser(os.fspath(music))

    added: list[str] = []
    skipped: list[dict[str, str]] = []
    for entry in playlist.entries:
        uri = track_uri(entry.path, music)
        if uri is None:
            skipped.append({"path": entry.path, "reason": f"outside MPD's music directory {music}"})
            continue
        try:
            known = any(item.get("file") == uri for item in client.lsinfo(uri))
        except mpd.CommandError:  # ACK 50 "No such directory"
            known = False
        if not known:
            skipped.append({
                "path": entry.path,
                "reason": f"not in MPD's database as {uri!r} (update MPD's database: mpc update)",
            })
            continue
        added.append(uri)

    if not added:
        first = f"; {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
        raise SinkError(
            f"none of the {len(playlist.entries)} tracks can be sent to MPD at {server}{first}"
        )

    client.command_list_ok_begin()
    if mode == "replace":
        client.clear()
    for uri in added:
        client.add(uri)
    client.command_list_end()

    if save_as:
        try:
            client.rm(save_as)
        except mpd.CommandError:  # ACK 50 "No such playlist": nothing to replace
            pass
        client.command_list_ok_begin()
        for uri in added:
            client.playlistadd(save_as, uri)
        client.command_list_end()

    status = client.status()
    return {
        "sink": "mpd",
        "server": server,
        "mode": mode,
        "music_directory": music,
        "added": added,
        "skipped": skipped,
        "saved_as": save_as or None,
        "queue_length": int(status.get("playlistlength", 0)),
    }


MPD_SINK = Sink("mpd", send)


@hookimpl
def register_sinks() -> list[Sink]:
    """The ``mpd`` sink."""
    return [MPD_SINK]


def _rpc_send(
    engine: Any,
    playlist: dict[str, Any],
    host: str | None = None,
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None,
    mode: Literal["replace", "append"] = "replace",
    save_as: str | None = None,
    music_directory: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """``sink.mpd.send``: the engine sends with its ``[mpd]`` settings section.

    The parameters are :func:`send`'s (typed, so the daemon answers -32602 for a port that is
    not a number or an option it does not know); the configured password goes only to the
    configured MPD.
    """
    options = {"host": host, "port": port, "mode": mode, "save_as": save_as,
               "music_directory": music_directory, "password": password}
    return engine.send(playlist, "mpd", **{k: v for k, v in options.items() if v is not None})


@hookimpl
def register_rpc_methods() -> dict[str, Any]:
    """``sink.mpd.send``: push a playlist dict to MPD from the daemon (front ends without a CLI)."""
    return {"sink.mpd.send": _rpc_send}


@hookimpl
def register_settings() -> dict[str, type]:
    """The ``[mpd]`` section."""
    return {"mpd": MpdSettings}
