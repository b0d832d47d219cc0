"""The deejai Kivy app: ``deejai-kivy [--embedded] [--socket PATH] [--screen join]``.

Five screens (Library, Join the dots, Radio, Map, Playlist) over one :class:`Backend`: the daemon
on desktop (started as a child process when none answers), an in-process Engine with
``--embedded`` and always on Android/iOS. Engine calls run on worker threads; their results and
the engine's events come back to the UI thread through ``@mainthread``. An error is a line in
the message bar, never a crash.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["main", "parse_args", "build_app"]

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The app's command line (Kivy's own options are switched off with ``KIVY_NO_ARGS``)."""
    parser = argparse.ArgumentParser(
        prog="deejai-kivy", description="deejai's app: scan, join the dots, radio, play."
    )
    parser.add_argument("--embedded", action="store_true",
                        help="run the engine inside the app instead of talking to the daemon")
    parser.add_argument("--socket", default=os.environ.get("DEEJAI_SOCKET") or None,
                        help="the daemon's socket (default: deejai's runtime folder)")
    parser.add_argument("--no-start-daemon", dest="start_daemon", action="store_false",
                        help="do not start `deejai serve` when no daemon answers")
    parser.add_argument("--music", default=None, help="folder proposed in the Library screen")
    parser.add_argument("--screen", default="library", choices=("library", "join", "radio", "map"),
                        help="the screen to open on (the tray's Join the dots... opens 'join')")
    parser.add_argument("--size", default=None, metavar="WxH", help="window size, e.g. 480x800")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Kivy's and deejai's informational log lines")
    parser.add_argument("--debug", action="store_true",
                        help="log engine calls and everything --verbose shows")
    return parser.parse_args(list(argv) if argv is not None else None)


def _configure_kivy(size: str | None) -> None:
    """Kivy settings that must be made before its window exists."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise SystemExit(f"deejai-kivy: --size expects WxH, got {size!r}") from None
        Config.set("graphics", "width", str(width))
        Config.set("graphics", "height", str(height))
    Config.set("input", "mouse", "mouse,multitouch_on_demand")
    Config.set("kivy", "exit_on_escape", "0")


def build_app(args: argparse.Namespace) -> Any:
    """Create (not run) the :class:`DeejaiApp` for parsed ``args``."""
    from deejai.ui_kivy import platform as plat

    plat.apply_storage_env()
    _configure_kivy(args.size)

    from kivy.app import App
    from kivy.clock import mainthread
    from kivy.lang import Builder
    from kivy.properties import BooleanProperty, ObjectProperty, StringProperty

    from deejai.engine.errors import ConnectionLost, DaemonNotRunning, DeejaiError
    from deejai.ui_kivy import join, library, mapscreen, playlist, widgets  # noqa: F401  (kv rules)
    from deejai.ui_kivy.backend import Backend
    from deejai.ui_kivy.viewmodel import contract_home

    plan = plat.run_plan(embedded=args.embedded, start_daemon=args.start_daemon)
    if args.music:
        plan = dataclasses.replace(plan, music_dir=str(Path(args.music).expanduser()))

    # The class is defined here, not at module level, because Kivy must not be imported
    # before _configure_kivy has set the window options (and `--help` must not import it).
    class DeejaiApp(App):
        """deejai on a screen: the Library, Join the dots, Radio and Playlist screens."""

        title = "deejai"
        plan = ObjectProperty(None)
        connection = StringProperty("connecting...")
        connected = BooleanProperty(False)
        message = StringProperty("")
        message_scope = StringProperty("")

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.plan = plan
            self.backend = Backend(
                embedded=plan.embedded,
                start_daemon=plan.start_daemon,
                socket=args.socket,
                index_backend=plan.index_backend,
                scan_executor=plan.scan_executor,
                on_event=self._event,
                on_connection=self._connection,
            )

        def build(self) -> Any:
            return Builder.load_file(widgets.kv_path("app.kv"))

        def on_start(self) -> None:
            from kivy.core.window import Window

            Window.bind(on_keyboard=self._on_keyboard)
            if plat.is_mobile(plan.platform):  # pragma: no cover - only on a phone
                Window.softinput_mode = "below_target"  # the keyboard must not hide a field
            if plan.platform == "android":  # pragma: no cover - only inside an APK
                self._ask_android_permissions()
                # the APK's Java classes, loaded on this (main) thread for the scan's threads
                from deejai.engine.decode.android import preload_classes

                preload_classes()
            folders = self.root.ids.library.ids.folders
            if args.music:
                folders.text = contract_home(plan.music_dir)
            self.root.ids.library.refresh()
            if args.screen != "library":
                self.go(args.screen)

        def on_stop(self) -> None:
            try:
                self.root.ids.playlist.stop()
            finally:
                self.backend.close()

        def on_pause(self) -> bool:
            """Android may pause the app (another app in front); keep its state."""
            return True

        def _on_keyboard(self, _window: Any, key: int, *_: Any) -> bool:
            """Escape / Android's back button: back to the Library screen; there, close the app."""
            if key != 27:
                return False
            if self.root.ids.screens.current != "library":
                self.go("library")
            else:
                self.stop()
            return True

        def _ask_android_permissions(self) -> None:  # pragma: no cover - Android only
            try:
                from android.permissions import Permission, request_permissions  # type: ignore
            except ImportError:
                return
            wanted = [getattr(Permission, name) for name in plat.ANDROID_PERMISSIONS
                      if hasattr(Permission, name)]
            request_permissions(wanted)

        # -------------------------------------------------------- calls
        def call(
            self,
            method: str,
            on_result: Callable[[Any], None] | None = None,
            on_error: Callable[[BaseException], None] | None = None,
            quiet: bool = False,
            **params: Any,
        ) -> Any:
            """Run ``engine.<method>(**params)`` on a worker thread.

            ``on_result(result)`` or ``on_error(exc)`` then run on the UI thread; an error is
            also shown in the message bar unless ``quiet``.
            """
            if args.debug:
                log.info("call %s %s", method, params)
            future = self.backend.submit(method, **params)
            future.add_done_callback(lambda f: self._deliver(method, f, on_result, on_error, quiet))
            return future

        def run_local(self, fn: Callable[..., Any], *fn_args: Any,
                      on_result: Callable[[Any], None] | None = None) -> Any:
            """Run ``fn(*fn_args)`` on a worker thread (plugin sinks); same delivery as call."""
            future = self.backend.run(fn, *fn_args)
            future.add_done_callback(lambda f: self._deliver(fn.__name__, f, on_result, None, False))
            return future

        @mainthread
        def _deliver(self, method: str, future: Any, on_result: Any, on_error: Any, quiet: bool) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is None:
                # the call worked: an error it (or a playlist call) left on screen is old news
                self.clear_message(*_scopes_cleared_by(method))
                if on_result is not None:
                    on_result(future.result())
                return
            if not isinstance(exc, DeejaiError):
                log.error("%s failed", method, exc_info=exc)
            if not quiet:
                text = str(exc) if isinstance(exc, DeejaiError) else f"{type(exc).__name__}: {exc}"
                connection = isinstance(exc, (DaemonNotRunning, ConnectionLost))
                self.show_message(text, error=True,
                                  scope="connection" if connection else f"call:{method}")
            if on_error is not None:
                on_error(exc)

        # -------------------------------------------------------- events
        @mainthread
        def _event(self, event: str, params: dict) -> None:
            screen = self.root.ids.library if self.root else None
            if screen is None:
                return
            if event == "scan.progress":
                screen.on_progress(params)
            elif event == "scan.finished":
                screen.on_finished(params)

        @mainthread
        def _connection(self, state: str, message: str) -> None:
            self.connected = state == "connected"
            if self.connected:
                self.connection = message
                self.clear_message("connection")  # "daemon not running" is over
            else:
                self.connection = "daemon lost"
                self.show_message(f"lost the daemon: {message}", error=True, scope="connection")

        def start_daemon(self) -> None:
            """The "Start daemon" button: start ``deejai serve`` now, then reconnect."""
            def start() -> dict:
                self.backend.spawn_daemon()
                return self.backend.call("status")

            self.run_local(start, on_result=self.root.ids.library.show_status)

        # -------------------------------------------------------- screens
        def show_message(self, text: str, error: bool = False, scope: str = "") -> None:
            """One line in the message bar (red for an error).

            ``scope`` names the state the message is about ("connection", "scan",
            "call:<method>", "make"); :meth:`clear_message` takes it away when that state is
            over (the daemon answers again, a playlist was made, a new scan started).
            """
            self.message = text
            self.message_scope = scope if text else ""
            bar = self.root.ids.message_bar if self.root else None
            if bar is not None:
                bar.error = error
                bar.text = text

        def clear_message(self, *scopes: str) -> None:
            """Take the message away when it belongs to one of ``scopes``."""
            if self.message and self.message_scope in scopes:
                self.show_message("")

        def show_playlist(self, playlist_dict: dict) -> None:
            self.root.ids.playlist.show(playlist_dict)
            self.go("playlist")

        def go(self, name: str) -> None:
            """Switch to screen ``name`` (library, join, radio, map, playlist)."""
            self.root.ids.screens.current = name
            for key in ("library", "join", "radio", "map", "playlist"):
                self.root.ids[f"nav_{key}"].state = "down" if key == name else "normal"

        def music_hint(self) -> str:
            """The music folder proposed in the Library screen, home shown as ``~``."""
            return contract_home(plan.music_dir)

        def export_dir(self) -> str:
            """Where playlists are saved by default: the music folder when it exists."""
            music = Path(plan.music_dir)
            return str(music if music.is_dir() else Path.home())

    return DeejaiApp()


#: Kivy log lines that say nothing a person can act on; shown with ``--verbose`` only.
#: ("Cutbuffer": no xclip/xsel, so no middle-click paste from other programs; "Config": the
#: first start writes Kivy's configuration file.)
QUIET_KIVY_PREFIXES = ("Cutbuffer:", "Config: Older configuration version",
                       "Config: Upgrading")


class _KivyNoise(logging.Filter):
    """Lowers :data:`QUIET_KIVY_PREFIXES` lines to DEBUG, keeping their first line only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno > logging.DEBUG and message.startswith(QUIET_KIVY_PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = message.splitlines()[0], ()
        return True


def configure_logging(verbose: bool = False, debug: bool = False) -> None:
    """One console handler, quiet by default: warnings and errors, one line each.

    Kivy logs through Python's logging (``KIVY_LOG_MODE=PYTHON``, set before Kivy is
    imported) instead of its own console handler, so every line appears once; ``--verbose``
    shows INFO lines, ``--debug`` everything.
    """
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("deejai-kivy: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    kivy_log = logging.getLogger("kivy")
    kivy_log.setLevel(level)
    if not any(isinstance(f, _KivyNoise) for f in kivy_log.filters):
        kivy_log.addFilter(_KivyNoise())  # a logger's filters run before its level reaches handlers


#: Calls whose success makes a playlist: errors of the other playlist calls and the screens'
#: "pick a track first" lines are old news then.
_PLAYLIST_CALLS = ("join", "radio")


def _scopes_cleared_by(method: str) -> tuple[str, ...]:
    """The message scopes a successful call of ``method`` ends."""
    scopes = [f"call:{method}", "connection"]
    if method in _PLAYLIST_CALLS:
        scopes += [f"call:{m}" for m in _PLAYLIST_CALLS] + ["call:tracks", "make"]
    if method == "scan":
        scopes.append("scan")
    return tuple(scopes)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``deejai-kivy``."""
    args = parse_args(argv)
    configure_logging(verbose=args.verbose, debug=args.debug)
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # before Kivy is imported: our options, not its
    try:
        import kivy  # noqa: F401
    except ImportError:
        from deejai.engine.hints import install_hint

        print(f"deejai-kivy needs Kivy: {install_hint('kivy')}", file=sys.stderr)
        return 1
    app = build_app(args)
    app.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
