"""The tray's logic, without a display and without pystray: state machine, menu, actions.

:class:`TrayState` is what the icon shows. It is computed from the daemon's answers by two pure
functions: :func:`state_from_status` (from ``engine.status``, the polling fallback) and
:func:`apply_event` (from the ``scan.progress`` / ``scan.finished`` notifications the daemon
pushes). The states and how they change::

                       daemon answers                    scan.progress
      not_running  ──────────────────────▶  idle  ──────────────────────▶  scanning
           ▲                               ▲  ▲                              │  │
           │ connection lost / refused     │  └──── scan.finished (ok, ──────┘  │
           └───────────── (from any state) │        cancelled)                  │
                                           │                                    ▼
                                           └──────── next scan starts ───── error
                                                                      (scan.finished failed,
                                                                       status() raised)

:class:`TrayController` holds the connection to the daemon (the tray talks *only* to the
daemon, through :class:`deejai.engine.rpc.Client`), keeps the state current (notifications,
with polling as the fallback), builds the menu as plain :class:`MenuEntry` objects, and runs the
menu's actions. The pystray glue (:mod:`deejai.plugins.tray.app`) only turns entries into
``pystray.MenuItem`` objects and pictures into icons.

Settings (``settings.toml``, all optional; the schema is
:class:`deejai.plugins.tray.TraySettings`, listed in ``docs/settings.md``)::

    [tray]
    playlist_dir = "~/Music/Playlists"  # where the tray saves playlists (default: data dir)
    join_length = 8                     # tracks between the two ends of a join
    radio_length = 20                   # tracks a radio playlist adds
    send_to = "open"                    # "open" (the desktop's player) or a sink, e.g. "mpd"
    join_with = "auto"                  # "app" (the Kivy app), "dialog", or "auto": the app
                                        # when it is installed, else a dialog
    opener = "xdg-open"                 # command that opens playlists and folders
    poll_interval_s = 2.0               # how often the state is polled besides notifications
"""
from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deejai.engine.errors import ConfigError, DaemonError, DaemonNotRunning, DeejaiError
from deejai.engine.units import format_duration

__all__ = [
    "NOT_RUNNING",
    "STATE_KINDS",
    "MenuEntry",
    "TrayController",
    "TrayState",
    "apply_event",
    "playlist_file_name",
    "read_playlist_paths",
    "state_from_status",
]

log = logging.getLogger(__name__)

#: Every value :attr:`TrayState.kind` takes.
STATE_KINDS = ("not_running", "idle", "scanning", "error")

#: Playlist files the "Recent playlists" menu lists.
PLAYLIST_SUFFIXES = (".m3u8", ".m3u")
#: How many recent playlists the menu shows.
RECENT_LIMIT = 10


@dataclass(frozen=True)
class TrayState:
    """What the tray icon shows.

    Attributes
    ----------
    kind : {"not_running", "idle", "scanning", "error"}
        The icon's state.
    done, total, errors : int
        Scan progress: files analysed, files to analyse, files that failed.
    eta_s : float or None
        Seconds the scan still needs, as the daemon estimates it.
    tracks : int or None
        Tracks in the library (``None``: not known yet).
    message : str
        The error, for ``kind == "error"``.
    job : str or None
        The scan job the progress belongs to.
    """

    kind: str = "not_running"
    done: int = 0
    total: int = 0
    errors: int = 0
    eta_s: float | None = None
    tracks: int | None = None
    message: str = ""
    job: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in STATE_KINDS:
            raise ValueError(f"unknown tray state {self.kind!r}; known: {', '.join(STATE_KINDS)}")

    @property
    def connected(self) -> bool:
        """True when the daemon answered the last time it was asked."""
        return self.kind != "not_running"

    @property
    def progress(self) -> float | None:
        """Fraction of the scan done, 0..1 (None unless scanning with a known total)."""
        if self.kind != "scanning" or self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    @property
    def percent(self) -> int | None:
        """Whole percent of the scan done, rounded down (None unless scanning)."""
        if self.kind != "scanning":
            return None
        p = self.progress
        return 0 if p is None else int(p * 100)

    @property
    def status_line(self) -> str:
        """One line for the menu's first (inactive) item and the tooltip."""
        if self.kind == "not_running":
            return "Daemon not running"
        if self.kind == "error":
            return f"Error: {self.message}" if self.message else "Error"
        if self.kind == "scanning":
            if self.total <= 0:
                return "Scanning: looking for files…"
            text = f"Scanning {self.percent}% ({self.done}/{self.total}"
            if self.errors:
                text += f", {self.errors} failed"
            eta = format_duration(self.eta_s, unknown="")
            if eta:
                text += f", {eta} left"
            return text + ")"
        if self.tracks is None:
            return "Idle"
        return f"Idle: {self.tracks} track{'s' if self.tracks != 1 else ''}"

    @property
    def title(self) -> str:
        """The icon's title (its tooltip): ``"deejai: scanning 42% (21/50)"``."""
        line = self.status_line
        return f"deejai: {line[:1].lower()}{line[1:]}"

    @property
    def picture(self) -> tuple[str, int | None]:
        """What the icon's picture depends on: the state and, when scanning, the percent in
        steps of 5 (so the picture is redrawn at most 20 times a scan)."""
        p = self.percent
        return self.kind, (None if p is None else p - p % 5)


#: The state before the daemon has answered, and after it stops answering.
NOT_RUNNING = TrayState("not_running")


def state_from_status(status: Mapping[str, Any]) -> TrayState:
    """The tray state for an ``engine.status`` answer.

    Parameters
    ----------
    status : dict
        :meth:`deejai.engine.service.Engine.status`: ``tracks`` and ``scan`` (the
        :meth:`~deejai.engine.service.Engine.scan_status` of the latest scan) are read.

    Returns
    -------
    TrayState
        ``scanning`` while the latest scan runs, ``error`` when it failed, else ``idle``.
    """
    tracks = status.get("tracks")
    tracks = int(tracks) if isinstance(tracks, (int, float)) else None
    scan = status.get("scan") or {}
    state = str(scan.get("state") or "idle")
    if state == "running":
        return TrayState(
            "scanning",
            done=int(scan.get("done") or 0),
            total=int(scan.get("total") or 0),
            errors=int(scan.get("errors") or 0),
            eta_s=scan.get("eta_s"),
            tracks=tracks,
            job=scan.get("job"),
        )
    if state == "failed":
        return TrayState("error", tracks=tracks, job=scan.get("job"),
                         message=f"the last scan failed: {scan.get('error') or 'unknown error'}")
    return TrayState("idle", tracks=tracks, job=scan.get("job"))


def apply_event(state: TrayState, event: str, params: Mapping[str, Any]) -> TrayState:
    """The state after a daemon notification (events other than ``scan.*`` change nothing).

    Parameters
    ----------
    state : TrayState
        The state before.
    event : str
        ``"scan.progress"`` (``{job, done, total, errors, rate, eta_s}``) or
        ``"scan.finished"`` (``{job, state, summary, error}``), as
        :meth:`deejai.engine.service.Engine.subscribe` documents them.
    params : dict
        The notification's parameters.
    """
    if event == "scan.progress":
        return TrayState(
            "scanning",
            done=int(params.get("done") or 0),
            total=int(params.get("total") or 0),
            errors=int(params.get("errors") or 0),
            eta_s=params.get("eta_s"),
            tracks=state.tracks,
            job=params.get("job"),
        )
    if event == "scan.finished":
        if params.get("state") == "failed":
            return TrayState("error", tracks=state.tracks, job=params.get("job"),
                             message=f"the last scan failed: {params.get('error') or 'unknown error'}")
        return TrayState("idle", tracks=state.tracks, job=params.get("job"))
    return state


@dataclass(frozen=True)
class MenuEntry:
    """One item of the tray menu, independent of any toolkit.

    Attributes
    ----------
    key : str
        Stable name (``"scan"``, ``"join"``, ``"radio"``, ``"recent"``, ``"daemon"``,
        ``"library"``, ``"quit"``, ``"status"``, ``"separator"``, ``"playlist"``).
    text : str
        The label.
    action : callable or None
        Called with no argument when the item is chosen.
    enabled : bool
        False greys the item out.
    default : bool
        The item a left click on the icon runs (where the backend has no menu).
    submenu : tuple of MenuEntry
        Items of a submenu (``action`` is then None).
    """

    key: str
    text: str
    action: Callable[[], Any] | None = None
    enabled: bool = True
    default: bool = False
    submenu: tuple[MenuEntry, ...] = field(default=())

    @property
    def is_separator(self) -> bool:
        return self.key == "separator"


SEPARATOR = MenuEntry("separator", "-")


def read_playlist_paths(path: Path | str) -> list[Path]:
    """The track paths of an M3U/M3U8 playlist, in order.

    Comment lines (``#EXTINF`` ...) are skipped; relative paths are taken relative to the
    playlist's folder; ``file://`` URLs are turned into paths; other URLs are skipped.

    Raises
    ------
    DeejaiError
        When the file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DeejaiError(f"{path}: cannot read the playlist ({exc.strerror or exc})") from None
    out = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        if "://" in line:
            parsed = urllib.parse.urlparse(line)
            if parsed.scheme != "file":
                continue
            line = urllib.request.url2pathname(parsed.path)
        p = Path(line)
        out.append(p if p.is_absolute() else (path.parent / p).resolve())
    return out


_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]+')


def playlist_file_name(playlist: Mapping[str, Any], when: float | None = None) -> str:
    """A file name for a playlist the tray made: ``2026-11-21 1230 join Intro to Outro.m3u8``.

    The name holds the time, the kind and the first and last titles, without characters that
    are not allowed in file names on Linux, macOS or Windows, and at most 120 characters.
    """
    entries = list(playlist.get("entries") or [])

    def label(entry: Mapping[str, Any]) -> str:
        title = str(entry.get("title") or "") or Path(str(entry.get("path") or "track")).stem
        return title

    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    kind = str(playlist.get("kind") or "playlist")
    what = f"{label(entries[0])} to {label(entries[-1])}" if entries else "empty"
    stem = _UNSAFE.sub("-", f"{stamp} {kind} {what}").strip(" .-")[:120].rstrip(" .")
    return stem + ".m3u8"


def _connect_to_daemon() -> Any:
    """The shared :func:`deejai.engine.connect` policy, daemon only; None when none answers."""
    from deejai.engine.rpc import connect

    try:
        return connect(fallback="error")
    except DaemonNotRunning:
        return None


def _tray_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[tray]`` section checked against :class:`~deejai.plugins.tray.TraySettings`,
    defaults filled in."""
    import msgspec

    from deejai.plugins.tray import TraySettings

    tray = settings.get("tray") or {}
    try:
        return msgspec.to_builtins(msgspec.convert(dict(tray), TraySettings))
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        reason = str(exc).replace("`$.", "`")
        raise ConfigError(f"settings: [tray] {reason[:1].lower()}{reason[1:]}") from None


class TrayController:
    """The tray's state, menu and actions; talks only to the daemon.

    Parameters
    ----------
    settings : dict, optional
        deejai's settings (default :func:`deejai.engine.config.load_settings`).
    paths : Paths, optional
        deejai's folders (default :func:`deejai.engine.config.paths`).
    connect : callable, optional
        ``connect() -> client or None``; default: :func:`deejai.engine.connect` (the daemon
        only: the tray never opens the library itself), None when no daemon answers. The
        client has the Engine's methods (``scan``, ``status``, ``join``, ``radio``,
        ``export``, ``subscribe``...).
    notify : callable, optional
        ``notify(title, message)`` shows a message to the person (default: the log).
    ask_tracks : callable, optional
        ``ask_tracks() -> (from, to) or None``: asks for the two ends of a join (default
        :func:`deejai.plugins.tray.desktop.ask_two_tracks`).
    launch : callable, optional
        ``launch(argv)`` starts a program that outlives the tray (default
        :func:`deejai.plugins.tray.desktop.launch_detached`).
    open_path : callable, optional
        ``open_path(path)`` opens a file or folder on the desktop (default
        :func:`deejai.plugins.tray.desktop.open_path` with the settings).
    on_change : callable, optional
        ``on_change(state)`` after each change of :attr:`state` (the glue redraws the icon and
        calls ``update_menu()``), from whatever thread noticed the change.
    on_quit : callable, optional
        Called by the Quit action (the glue stops the icon).

    Notes
    -----
    Actions (:meth:`scan_now`, :meth:`join_dots`, ...) are synchronous and raise
    :class:`~deejai.engine.errors.DeejaiError`; :meth:`dispatch` runs one on the action thread
    and turns an error into a notification, which is what the menu does.
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        paths: Any = None,
        connect: Callable[[], Any] | None = None,
        notify: Callable[[str, str], Any] | None = None,
        ask_tracks: Callable[[], tuple[str, str] | None] | None = None,
        launch: Callable[[Sequence[str]], Any] | None = None,
        open_path: Callable[[Path], Any] | None = None,
        on_change: Callable[[TrayState], Any] | None = None,
        on_quit: Callable[[], Any] | None = None,
    ) -> None:
        from deejai.engine.config import paths as default_paths
        from deejai.plugins.manager import load_settings
        from deejai.plugins.tray import desktop

        self.paths = paths or default_paths()
        self.settings = settings if settings is not None else load_settings(self.paths)
        tray = _tray_settings(self.settings)
        self.playlist_dir = Path(tray["playlist_dir"] or self.paths.data_dir / "playlists")
        self.join_length = tray["join_length"]
        self.radio_length = tray["radio_length"]
        self.send_to = tray["send_to"]
        self.join_with = tray["join_with"]
        self.poll_interval_s = tray["poll_interval_s"]

        self._connect = connect or _connect_to_daemon
        self._notify = notify or (lambda title, message: log.warning("%s: %s", title, message))
        self._ask_tracks = ask_tracks or desktop.ask_two_tracks
        self._launch = launch or desktop.launch_detached
        self._open_path = open_path or (lambda p: desktop.open_path(p, self.settings))
        self._on_change = on_change
        self._on_quit = on_quit

        self._lock = threading.RLock()
        self._refresh_lock = threading.RLock()
        self._state = NOT_RUNNING
        self._client: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._daemon_proc: Any = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._actions = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="deejai-tray-action")

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> TrayState:
        """The current :class:`TrayState`."""
        with self._lock:
            return self._state

    def _set_state(self, new: TrayState) -> None:
        with self._lock:
            if new == self._state:
                return
            self._state = new
        log.debug("tray state: %s", new.title)
        if self._on_change is not None:
            try:
                self._on_change(new)
            except Exception:
                log.exception("the tray failed to show a state change")

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except DeejaiError:
                pass
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a dead socket
                log.debug("closing the daemon client failed", exc_info=True)

    def _on_event(self, event: str, params: dict) -> None:
        if event == "scan.finished":
            # The track count changed: ask the daemon for the whole state rather than show
            # the old count for a moment (this runs on the client's event thread, where
            # calling the client is allowed).
            if not self.refresh().connected:
                return
        else:
            with self._refresh_lock:
                self._set_state(apply_event(self.state, event, params))
        if event == "scan.finished":
            if params.get("state") == "failed":
                self._notify("deejai: scan failed", str(params.get("error") or "unknown error"))
            else:
                summary = params.get("summary") or {}
                added = summary.get("added", summary.get("analysed"))
                text = "Scan finished" if added is None else f"Scan finished: {added} new tracks"
                self._notify("deejai", text)

    def client(self) -> Any:
        """The connected daemon client, connecting (and subscribing) when needed.

        Raises
        ------
        DaemonNotRunning
            When no daemon answers; the message says how to start one.
        """
        with self._lock:
            client = self._client
        if client is not None and not getattr(client, "closed", False):
            return client
        self._drop_client()
        client = self._connect()
        if client is None:
            self._set_state(NOT_RUNNING)
            raise DaemonNotRunning("the deejai daemon is not running",
                                   hint="choose Start daemon, or run `deejai serve`")
        try:
            unsubscribe = client.subscribe(self._on_event)
        except DeejaiError:
            client.close()
            self._set_state(NOT_RUNNING)
            raise
        with self._lock:
            self._client, self._unsubscribe = client, unsubscribe
        return client

    def refresh(self) -> TrayState:
        """Ask the daemon for its status and update :attr:`state` (the polling fallback).

        Never raises: a daemon that does not answer gives ``not_running``, one that answers
        with an error gives ``error``.
        """
        self._reap_daemon()
        # One refresh at a time, and events wait for it: a status fetched before a scan
        # finished must not be shown after the state that scan.finished brought.
        with self._refresh_lock:
            try:
                client = self.client()
                status = client.status()
            except DaemonError:
                # not running, or the connection broke while asking
                self._drop_client()
                self._set_state(NOT_RUNNING)
                return self.state
            except DeejaiError as exc:
                self._set_state(TrayState("error", message=str(exc), tracks=self.state.tracks))
                return self.state
            self._set_state(state_from_status(status))
            return self.state

    def start(self) -> None:
        """Connect and start polling every ``poll_interval_s`` seconds (a daemon thread)."""
        if self._poller is not None:
            return
        self._stop.clear()
        self.refresh()

        def poll() -> None:
            while not self._stop.wait(self.poll_interval_s):
                self.refresh()

        self._poller = threading.Thread(target=poll, name="deejai-tray-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop polling, wait for a running action, and close the connection."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=self.poll_interval_s + 5)
            self._poller = None
        self._actions.shutdown(wait=True)
        self._drop_client()

    # ------------------------------------------------------------------ menu
    def recent_playlists(self, limit: int = RECENT_LIMIT) -> list[Path]:
        """The newest playlist files in the playlist folder, newest first."""
        try:
            files = [p for p in self.playlist_dir.iterdir()
                     if p.suffix.lower() in PLAYLIST_SUFFIXES and p.is_file()]
        except OSError:
            return []

        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except OSError:
                return 0.0

        return sorted(files, key=lambda p: (mtime(p), p.name), reverse=True)[:limit]

    def menu_entries(self) -> list[MenuEntry]:
        """The menu for the current state, top to bottom.

        The first item says the state (inactive); actions that need the daemon are greyed
        out while it does not run, and Scan while a scan runs. The default item (left click
        where the backend has no menu) is Join the dots… while the daemon runs, else Start
        daemon.
        """
        state = self.state
        running = state.connected
        recent = self.recent_playlists()
        has_tracks = state.tracks is None or state.tracks > 0
        playlists = tuple(
            MenuEntry("playlist", p.stem, action=(lambda p=p: self.open_playlist(p)))
            for p in recent
        )
        return [
            MenuEntry("status", state.status_line, enabled=False),
            SEPARATOR,
            MenuEntry("scan", "Scan library now", self.scan_now,
                      enabled=running and state.kind != "scanning"),
            MenuEntry("join", "Join the dots…", self.join_dots,
                      enabled=running and has_tracks, default=running),
            MenuEntry("radio", "Radio from the last playlist", self.radio_from_last,
                      enabled=running and has_tracks and bool(recent)),
            MenuEntry("recent", "Recent playlists", submenu=playlists, enabled=bool(playlists)),
            SEPARATOR,
            MenuEntry("daemon", "Stop daemon", self.stop_daemon) if running else
            MenuEntry("daemon", "Start daemon", self.start_daemon, default=True),
            MenuEntry("library", "Open the library folder", self.open_library_folder),
            SEPARATOR,
            MenuEntry("quit", "Quit", self.quit),
        ]

    def dispatch(self, action: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``action`` on the action thread; a :class:`DeejaiError` becomes a notification.

        Returns the future of the action's result (None when it failed).
        """

        def run() -> Any:
            try:
                return action()
            except DeejaiError as exc:
                self._notify("deejai", str(exc))
            except Exception as exc:  # a bug must not kill the tray
                log.exception("tray action failed")
                self._notify("deejai", f"unexpected error: {type(exc).__name__}: {exc}")
            return None

        return self._actions.submit(run)

    # ------------------------------------------------------------------ actions
    def _library_roots(self) -> list[str]:
        """The music folders: the settings' ``music_dirs``, else the last scan's folders."""
        roots = [str(p) for p in self.settings.get("music_dirs") or []]
        if roots:
            return roots
        try:
            status = self.client().status()
        except DeejaiError:
            return []
        last = status.get("last_scan") or {}
        roots = list(last.get("roots") or [])
        if not roots:
            roots = list((status.get("scan") or {}).get("roots") or [])
        return [str(r) for r in roots]

    def scan_now(self) -> dict[str, Any]:
        """Start a scan of the music folders in the daemon; returns ``{"job": id}``.

        Raises
        ------
        ConfigError
            When no music folder is configured and none was scanned before.
        ScanRunningError, DaemonError
        """
        client = self.client()
        roots = self._library_roots()
        if not roots:
            raise ConfigError("no music folder to scan: set music_dirs in settings.toml, or run "
                              "`deejai scan ~/Music` once")
        job = client.scan(paths=roots)
        with self._lock:
            before = self._state
        self._set_state(replace(before, kind="scanning", done=0, total=0, errors=0, eta_s=None,
                                message="", job=job.get("job")))
        return job

    def join_dots(self, waypoints: Sequence[str] | None = None) -> Path | None:
        """Join the dots: open the app's join screen, or ask for two tracks and make it here.

        Parameters
        ----------
        waypoints : sequence of str, optional
            The tracks to join (skips the app and the dialog).

        Returns
        -------
        Path or None
            The playlist file written, or None when the app was opened or the person
            cancelled.
        """
        from deejai.plugins.tray.desktop import kivy_app_command

        if waypoints is None:
            app = kivy_app_command("join") if self.join_with != "dialog" else None
            if app is None and self.join_with == "app":
                from deejai.engine.hints import install_hint

                raise DeejaiError(f"the deejai app is not installed: {install_hint('kivy')}")
            if app is not None:
                self._launch(app)
                return None
            answer = self._ask_tracks()
            if answer is None:
                return None
            waypoints = list(answer)
        playlist = self.client().join(waypoints=list(waypoints), n=self.join_length)
        return self._save_and_deliver(playlist)

    def radio_from_last(self) -> Path:
        """A radio playlist that carries on from the end of the newest playlist.

        The last three tracks of the newest playlist seed the radio (its look-back); the new
        playlist holds the ``radio_length`` tracks that follow them.

        Raises
        ------
        DeejaiError
            When there is no playlist yet, or its tracks are no longer in the library.
        """
        recent = self.recent_playlists(limit=1)
        if not recent:
            raise DeejaiError("no playlist yet: make one with Join the dots… first")
        tracks = read_playlist_paths(recent[0])
        if not tracks:
            raise DeejaiError(f"{recent[0]}: the playlist has no tracks")
        seeds = [str(p) for p in tracks[-3:]]
        client = self.client()
        playlist = client.radio(seeds=seeds, n=len(seeds) + self.radio_length, lookback=3)
        entries = list(playlist.get("entries") or [])
        playlist = dict(playlist, entries=entries[len(seeds):] or entries)
        return self._save_and_deliver(playlist)

    def _save_and_deliver(self, playlist: dict[str, Any]) -> Path:
        """Write ``playlist`` into the playlist folder, then deliver it.

        The tray writes the file itself (the daemon writes only into its own playlist
        folder, and the tray's may be another one)."""
        from deejai.plugins.manager import write_playlist

        self.playlist_dir.mkdir(parents=True, exist_ok=True)
        target = self.playlist_dir / playlist_file_name(playlist)
        written = Path(write_playlist(playlist, target, format="m3u8"))
        self.deliver(written, playlist)
        return written

    def deliver(self, path: Path, playlist: Mapping[str, Any] | None = None) -> Any:
        """Send the playlist at ``path`` where the settings say: the ``send_to`` sink, or the
        desktop's default program.

        Returns
        -------
        Any
            The sink's report (a dict), or None when the file was opened.
        """
        if self.send_to == "open":
            self._open_path(Path(path))
            return None
        from deejai.plugins.manager import send_to_sink

        if playlist is None:
            playlist = {"entries": [{"id": 0, "path": str(p)} for p in read_playlist_paths(path)]}
        report = send_to_sink(self.send_to, playlist, self.settings)
        added = len(report.get("added") or []) if isinstance(report, Mapping) else None
        if added is not None:
            self._notify("deejai", f"sent {added} tracks to {self.send_to}")
        return report

    def open_playlist(self, path: Path | str) -> Any:
        """Open or send a recent playlist (see :meth:`deliver`)."""
        path = Path(path)
        if not path.is_file():
            raise DeejaiError(f"{path}: the playlist is gone")
        return self.deliver(path)

    def _reap_daemon(self, wait_s: float = 0.0) -> None:
        """Collect the exit status of a daemon this tray started, once it has exited."""
        with self._lock:
            proc = self._daemon_proc
        if proc is None or not hasattr(proc, "wait"):
            return
        try:
            proc.wait(timeout=wait_s) if wait_s > 0 else proc.poll()
        except Exception:  # subprocess.TimeoutExpired: still running
            return
        if proc.returncode is not None:
            with self._lock:
                if self._daemon_proc is proc:
                    self._daemon_proc = None

    def start_daemon(self, wait_s: float = 15.0) -> bool:
        """Start ``deejai serve`` in the background and wait until it answers.

        Returns
        -------
        bool
            True once the daemon answers (or one was running already).

        Raises
        ------
        DaemonError
            When the daemon does not answer within ``wait_s`` seconds (its log says why).
        """
        from deejai.plugins.tray.desktop import deejai_command

        if self.refresh().connected:
            return True
        proc = self._launch([*deejai_command(), "serve"])
        with self._lock:
            self._daemon_proc = proc
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.refresh().connected:
                self._notify("deejai", "daemon started")
                return True
            poll = getattr(proc, "poll", None)
            if poll is not None and poll() is not None:
                break
            time.sleep(0.2)
        raise DaemonError(f"the daemon did not start; see {self.paths.log_file}")

    def stop_daemon(self, wait_s: float = 60.0) -> bool:
        """Ask the daemon to stop (a running scan commits what it finished); wait for it.

        Returns True once the daemon no longer answers.
        """
        try:
            client = self.client()
        except DaemonError:
            return True
        try:
            client.shutdown()
        except DaemonError:
            pass  # it closed the connection while answering
        self._drop_client()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self.refresh().connected:
                self._reap_daemon(wait_s=max(0.1, deadline - time.monotonic()))
                return True
            self._drop_client()
            time.sleep(0.2)
        raise DaemonError(f"the daemon is still running after {wait_s:g} s")

    def open_library_folder(self) -> Path:
        """Open the first music folder (else deejai's data folder) in the file manager."""
        roots = self._library_roots()
        folder = Path(roots[0]) if roots else self.paths.data_dir
        if folder.is_file():
            folder = folder.parent
        self._open_path(folder)
        return folder

    def quit(self) -> None:
        """Leave the tray (the daemon keeps running)."""
        self._stop.set()
        if self._on_quit is not None:
            self._on_quit()
