"""The tray front end: its logic without a display, then with real parts.

The integration tests use a real daemon (``deejai serve`` in a subprocess, over a Unix socket),
a real MP3 library (tests/audiogen), a real X server (Xvfb), a real system tray host
(``trayer``) and pystray's own backends in a subprocess. Whatever is missing (Xvfb, trayer,
PyGObject) skips only the tests that need it.

``DEEJAI_SCREENSHOT_DIR=docs/img pytest tests/test_tray.py`` also copies the screenshots there.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deejai.engine.errors import DeejaiError, TrayUnavailableError
from deejai.plugins.tray import desktop, icons
from deejai.plugins.tray.logic import (
    NOT_RUNNING,
    TrayController,
    TrayState,
    apply_event,
    playlist_file_name,
    read_playlist_paths,
    state_from_status,
)

from tests.audiogen import make_library

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------- state machine
def test_state_from_status_follows_the_latest_scan():
    assert state_from_status({"tracks": 0, "scan": {"job": None, "state": "idle"}}) == \
        TrayState("idle", tracks=0)
    running = state_from_status({"tracks": 3, "scan": {"job": "j1", "state": "running",
                                                       "done": 21, "total": 50, "errors": 2,
                                                       "eta_s": 75.0}})
    assert running.kind == "scanning" and running.percent == 42 and running.tracks == 3
    assert running.title == "deejai: scanning 42% (21/50, 2 failed, 1:15 left)"
    failed = state_from_status({"tracks": 3, "scan": {"state": "failed", "error": "disk full"}})
    assert failed.kind == "error" and "disk full" in failed.title
    done = state_from_status({"tracks": 12, "scan": {"state": "finished"}})
    assert done.kind == "idle" and done.title == "deejai: idle: 12 tracks"


def test_events_drive_the_state_machine():
    s = TrayState("idle", tracks=5)
    s = apply_event(s, "scan.progress", {"job": "a", "done": 0, "total": 0, "errors": 0})
    assert s.kind == "scanning" and s.percent == 0 and "looking for files" in s.title
    s = apply_event(s, "scan.progress", {"job": "a", "done": 3, "total": 4, "errors": 0,
                                         "eta_s": 1.0})
    assert s.percent == 75 and s.progress == 0.75 and s.picture == ("scanning", 75)
    assert apply_event(s, "library.changed", {}) is s  # unknown events change nothing
    ok = apply_event(s, "scan.finished", {"job": "a", "state": "finished", "summary": {}})
    assert ok.kind == "idle" and ok.tracks == 5
    cancelled = apply_event(s, "scan.finished", {"job": "a", "state": "cancelled"})
    assert cancelled.kind == "idle"
    bad = apply_event(s, "scan.finished", {"job": "a", "state": "failed", "error": "boom"})
    assert bad.kind == "error" and bad.message.endswith("boom") and bad.picture == ("error", None)
    # the picture changes in 5 % steps only
    a = apply_event(s, "scan.progress", {"done": 41, "total": 100})
    b = apply_event(s, "scan.progress", {"done": 44, "total": 100})
    assert a.picture == b.picture == ("scanning", 40) and a.title != b.title
    assert NOT_RUNNING.title == "deejai: daemon not running" and not NOT_RUNNING.connected
    with pytest.raises(ValueError):
        TrayState("sleeping")


# ------------------------------------------------------------------------- icons
def test_shipped_icons_are_the_drawn_ones_at_every_size():
    from PIL import Image, ImageChops, ImageStat

    for state in icons.STATES:
        for size in icons.SIZES:
            path = icons.icon_file(state, size)
            assert path.is_file(), f"{path} missing: run python -m deejai.plugins.tray.icons"
            with Image.open(path) as shipped:
                assert shipped.size == (size, size) and shipped.mode == "RGBA"
                diff = ImageChops.difference(shipped, icons.draw_icon(state, size))
                assert max(ImageStat.Stat(diff).mean) < 2.0, (state, size)
    assert (icons.ICON_DIR / "deejai.png").is_file()


def test_icons_say_the_state_by_colour_and_progress():
    from PIL import ImageChops

    centre = {}
    for state in icons.STATES:
        img = icons.draw_icon(state, 64)
        assert img.getpixel((0, 0))[3] == 0  # transparent corner
        # a pixel on the disc, off the glyph
        centre[state] = img.getpixel((32, 8))[:3] if state != "scanning" else \
            img.getpixel((32, 14))[:3]
    assert centre["idle"] == icons.COLOURS["idle"]
    assert centre["not_running"] == icons.COLOURS["not_running"]
    assert centre["error"] == icons.COLOURS["error"]
    assert len(set(centre.values())) == 4
    quarter = icons.draw_icon("scanning", 64, progress=0.25)
    most = icons.draw_icon("scanning", 64, progress=0.9)
    assert ImageChops.difference(quarter.convert("RGB"), most.convert("RGB")).getbbox()
    # the ring at 9 o'clock is white only when the scan is past 75 %
    assert most.getpixel((8, 32))[:3] == (255, 255, 255)
    assert quarter.getpixel((8, 32))[:3] != (255, 255, 255)
    with pytest.raises(ValueError):
        icons.draw_icon("sleeping", 64)
    with pytest.raises(ValueError):
        icons.draw_icon("idle", 4)


# ------------------------------------------------------------------------- playlists
def test_read_playlist_paths(tmp_path):
    (tmp_path / "a").mkdir()
    song = tmp_path / "a" / "one.mp3"
    song.write_bytes(b"")
    m3u = tmp_path / "list.m3u8"
    m3u.write_text("\ufeff#EXTM3U\n#EXTINF:5,A - One\na/one.mp3\n\n"
                   f"{tmp_path / 'b.mp3'}\nfile://{tmp_path / 'c%20d.mp3'}\n"
                   "http://radio.example/stream\n", encoding="utf-8")
    assert read_playlist_paths(m3u) == [song, tmp_path / "b.mp3", tmp_path / "c d.mp3"]
    with pytest.raises(DeejaiError, match="missing.m3u8"):
        read_playlist_paths(tmp_path / "missing.m3u8")


def test_playlist_file_names_are_safe():
    name = playlist_file_name({"kind": "join", "entries": [
        {"title": 'AC/DC: "Back"?', "path": "/x/1.mp3"}, {"title": "", "path": "/x/Outro.mp3"}]},
        when=0)
    assert name.endswith(" join AC-DC- -Back- to Outro.m3u8")
    assert not any(c in name for c in '/\\:*?"<>|')
    long = playlist_file_name({"kind": "radio", "entries": [{"title": "x" * 300}]})
    assert len(long) <= 125 and long.endswith(".m3u8")


# ------------------------------------------------------------------------- desktop integration
def test_autostart_install_and_remove(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    from deejai.plugins.tray.__main__ import main

    assert main(["--install-autostart"]) == 0
    entry = tmp_path / "cfg" / "autostart" / "deejai-tray.desktop"
    text = entry.read_text(encoding="utf-8")
    exec_line = next(l for l in text.splitlines() if l.startswith("Exec="))[5:]
    assert shlex.split(exec_line) == [PY, "-m", "deejai.ui_cli.main", "tray"]
    icon = next(l for l in text.splitlines() if l.startswith("Icon="))[5:]
    assert Path(icon).is_file()
    if shutil.which("desktop-file-validate"):
        res = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    # a path with spaces and a dollar survives the Exec quoting
    odd = ["/opt/my apps/py$thon", "-m", "deejai.ui_cli.main", "tray"]
    line = next(l for l in desktop.desktop_entry(odd).splitlines() if l.startswith("Exec="))
    assert line == 'Exec="/opt/my apps/py\\$thon" -m deejai.ui_cli.main tray'
    assert main(["--remove-autostart"]) == 0
    assert not entry.exists()
    assert desktop.remove_autostart() is None  # nothing left to remove
    # a relative XDG_CONFIG_HOME is ignored, as the base directory specification says
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")
    assert desktop.autostart_file() == Path.home() / ".config" / "autostart" / \
        "deejai-tray.desktop"


def test_shipped_desktop_file_is_valid():
    if not shutil.which("desktop-file-validate"):
        pytest.skip("desktop-file-validate (desktop-file-utils) is not installed")
    res = subprocess.run(["desktop-file-validate", str(desktop.DESKTOP_TEMPLATE)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _tray_cmd(*args: str) -> list[str]:
    return [PY, "-m", "deejai.plugins.tray", *args]


def test_no_display_is_one_line_and_exit_1():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = subprocess.run(_tray_cmd(), env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("deejai: error: no graphical session")


def test_unreachable_display_is_one_line_and_exit_1():
    env = dict(os.environ, DISPLAY=":4321")  # no X server there
    res = subprocess.run(_tray_cmd("--backend", "xorg"), env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("deejai: error: no system tray backend works here")


def test_unknown_backend_is_refused():
    with pytest.raises(TrayUnavailableError, match="unknown tray backend"):
        from deejai.plugins.tray.app import import_pystray

        import_pystray("qt")


def test_plugin_registers_without_importing_pystray():
    code = ("import sys, json, click\n"
            "import deejai.plugins.tray as t\n"
            "g = click.Group('deejai'); t.register_commands(g)\n"
            "fe = t.register_frontends()\n"
            "print(json.dumps([sorted(g.commands), [f.name for f in fe],\n"
            "                  [m for m in ('pystray', 'PIL', 'Xlib') if m in sys.modules]]))\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [["tray"], ["tray"], []]


# ------------------------------------------------------------------------- the controller
class Recorder:
    """A real program standing in for the desktop's opener: it appends its arguments to a file."""

    def __init__(self, folder: Path):
        self.log = folder / "opened.txt"
        self.script = folder / "opener.sh"
        self.script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{self.log}"\n')
        self.script.chmod(0o755)

    def opened(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"the opener ran {len(lines)} times, expected {count}")


def _settings(**tray):
    from deejai.engine.config import load_settings

    settings = load_settings()
    settings["workers"] = 1
    settings["tray"] = dict(tray)
    return settings


def test_without_a_daemon_the_menu_offers_to_start_it(tmp_path):
    ctl = TrayController(settings=_settings(), connect=lambda: None)
    try:
        assert ctl.refresh() == NOT_RUNNING
        menu = {e.key: e for e in ctl.menu_entries()}
        assert menu["status"].text == "Daemon not running" and not menu["status"].enabled
        assert not menu["scan"].enabled and not menu["join"].enabled
        assert not menu["radio"].enabled and not menu["recent"].enabled
        assert menu["daemon"].text == "Start daemon" and menu["daemon"].default
        with pytest.raises(DeejaiError, match="not running"):
            ctl.scan_now()
        messages = []
        ctl._notify = lambda title, message: messages.append(message)
        assert ctl.dispatch(ctl.scan_now).result(10) is None
        assert messages and "deejai serve" in messages[0]
    finally:
        ctl.close()


def test_join_opens_the_app_when_it_is_installed(tmp_path):
    app = desktop.kivy_app_command("join")
    if app is None:
        pytest.skip("the Kivy app (deejai[kivy]) is not installed")
    assert app[:3] == [PY, "-m", "deejai.ui_kivy.app"]
    launched = []
    ctl = TrayController(settings=_settings(join_with="auto"), connect=lambda: None,
                         launch=launched.append)
    try:
        assert ctl.join_dots() is None
        assert launched == [app]
    finally:
        ctl.close()
    # "dialog" never opens the app: it asks for the two tracks (here the person cancels)
    asked = []
    ctl = TrayController(settings=_settings(join_with="dialog"), connect=lambda: None,
                         launch=launched.append, ask_tracks=lambda: asked.append(1))
    try:
        assert ctl.join_dots() is None and asked == [1] and len(launched) == 1
    finally:
        ctl.close()


def test_no_dialog_program_says_what_to_install():
    import importlib.util

    if shutil.which("zenity") or shutil.which("kdialog") or importlib.util.find_spec("tkinter"):
        pytest.skip("a dialog program is installed here")
    with pytest.raises(DeejaiError, match=r"deejai\[kivy\]"):
        desktop.ask_two_tracks()


# ------------------------------------------------------------------------- real daemon
def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Daemon:
    """``deejai serve --socket PATH`` in a subprocess, with this test's DEEJAI_HOME."""

    def __init__(self, home: Path):
        from deejai.engine.config import paths

        self.socket = paths().socket_file
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log = home / "serve.out"
        self.proc = subprocess.Popen(
            [PY, "-m", "deejai.ui_cli.main", "serve", "--socket", str(self.socket)],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=dict(os.environ))
        self.client = _wait(self._connect, 60, "the daemon to answer")

    def _connect(self):
        from deejai.engine.rpc import Client

        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited: {self.log.read_text()}")
        return Client.connect_or_none(str(self.socket))

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.client.shutdown()
                except DeejaiError:
                    pass
                self.proc.wait(60)
        finally:
            self.client.close()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def library(tmp_path) -> Path:
    make_library(tmp_path / "music", n=6, seconds=5.0)
    return tmp_path / "music"


@pytest.fixture
def daemon(deejai_home, library):
    settings = deejai_home / "config" / "settings.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f'workers = 1\nmusic_dirs = ["{library}"]\n', encoding="utf-8")
    d = Daemon(deejai_home)
    yield d
    d.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pystray_menu_module():
    """pystray's Menu/MenuItem (backend-independent) without a display: the dummy backend."""
    if "pystray" not in sys.modules:
        os.environ.setdefault("PYSTRAY_BACKEND", "dummy")
    try:
        import pystray
    finally:
        if os.environ.get("PYSTRAY_BACKEND") == "dummy":
            del os.environ["PYSTRAY_BACKEND"]
    return pystray


def _item(items, text):
    for item in items:
        if item.text == text:
            return item
    raise AssertionError(f"no menu item {text!r} in {[i.text for i in items]}")


def test_menu_actions_call_the_daemon(daemon, library, tmp_path):
    """Every menu action, chosen through the pystray.MenuItem objects the app builds."""
    from deejai.plugins.tray.app import TrayApp

    pystray = _pystray_menu_module()
    opener = Recorder(tmp_path)
    states: list[TrayState] = []
    asked = [str(library / "Artist 0" / "00 chord 0.mp3"), str(library / "Artist 0" /
                                                                "04 bass 4.mp3")]
    ctl = TrayController(settings=_settings(opener=str(opener.script), join_with="dialog",
                                            join_length=3, radio_length=2,
                                            poll_interval_s=0.5),
                         ask_tracks=lambda: tuple(asked))
    app = TrayApp(pystray, ctl)
    ctl._on_change = states.append  # the app has no icon here; record what it would show
    notes: list[str] = []
    ctl._notify = lambda title, message: notes.append(message)
    try:
        ctl.start()
        assert ctl.state == TrayState("idle", tracks=0)
        items = app.menu_items()
        assert [i.text for i in items if i is not pystray.Menu.SEPARATOR][:2] == \
            ["Idle: 0 tracks", "Scan library now"]

        # Scan library now: the daemon scans the configured music folder
        job = _item(items, "Scan library now")(None).result(30)
        assert daemon.client.scan_status()["job"] == job["job"]
        _wait(lambda: ctl.state.kind == "idle" and ctl.state.tracks == 6, 180,
              "the scan to finish")
        assert any(s.kind == "scanning" and s.total == 6 for s in states)
        assert _item(app.menu_items(), "Scan library now").enabled

        # Join the dots…: the dialog's two tracks, a playlist file the daemon writes, opened
        joined = _item(app.menu_items(), "Join the dots…")(None).result(60)
        assert joined is not None, notes
        assert joined.is_file() and joined.parent == ctl.playlist_dir
        paths = read_playlist_paths(joined)
        assert [str(paths[0]), str(paths[-1])] == asked and len(paths) == 2 + ctl.join_length
        assert opener.opened(1) == [str(joined)]

        # Radio from the last playlist: carries on after the joined playlist's last track
        time.sleep(1.1)  # a distinct file name (the time stamp has seconds)
        radio = _item(app.menu_items(), "Radio from the last playlist")(None).result(60)
        assert radio.is_file() and radio != joined
        more = read_playlist_paths(radio)
        assert 0 < len(more) <= ctl.radio_length and paths[-1] not in more
        assert opener.opened(2)[1] == str(radio)

        # Recent playlists: newest first, and opening one hands it to the opener
        recent = _item(app.menu_items(), "Recent playlists")
        names = [i.text for i in recent.submenu.items]
        assert names == [radio.stem, joined.stem]
        recent.submenu.items[1](None).result(30)
        assert opener.opened(3)[2] == str(joined)

        # Open the library folder
        assert _item(app.menu_items(), "Open the library folder")(None).result(30) == library
        assert opener.opened(4)[3] == str(library)

        # Stop daemon: the daemon exits, the state turns to "not running", no crash
        pid = int(daemon.client.ping()["pid"])
        assert _item(app.menu_items(), "Stop daemon")(None).result(90) is True
        daemon.proc.wait(30)
        assert ctl.state == NOT_RUNNING and states[-1] == NOT_RUNNING
        assert not _pid_alive(pid)

        # Start daemon: a real `deejai serve` the tray launches in its own session
        assert _item(app.menu_items(), "Start daemon")(None).result(90) is True
        assert ctl.state.kind == "idle" and ctl.state.tracks == 6
        new_pid = int(ctl.client().ping()["pid"])
        assert new_pid != pid
        assert _item(app.menu_items(), "Stop daemon")(None).result(90) is True
        _wait(lambda: not _pid_alive(new_pid), 30, "the started daemon to exit")
    finally:
        ctl.close()


# ------------------------------------------------------------------------- X11, real tray
XVFB = shutil.which("Xvfb")
SCREEN_W, SCREEN_H = 480, 320  # the Xvfb screen the tests start
TOP_RIGHT = (SCREEN_W - 160, 0, SCREEN_W, 40)  # where trayer's panel and its icon are
TRAYER = shutil.which("trayer")
needs_x = pytest.mark.skipif(not (XVFB and TRAYER),
                             reason="needs Xvfb and trayer (apt-get install xvfb trayer)")


class XSession:
    """Xvfb plus trayer (a real XEMBED system tray host) on a free display."""

    def __init__(self, tmp: Path, tray: bool = True):
        self.procs: list[subprocess.Popen] = []
        try:
            self._start(tmp, tray)
        except BaseException:
            self.close()  # never leave an Xvfb behind
            raise

    def _start(self, tmp: Path, tray: bool) -> None:
        # A random free display number, retried when another X server takes it first (other
        # test runs start Xvfb servers too); ready once a client can connect.
        import random

        import Xlib.display

        for _ in range(8):
            num = random.randrange(100, 1000)
            if Path(f"/tmp/.X11-unix/X{num}").exists() or Path(f"/tmp/.X{num}-lock").exists():
                continue
            proc = subprocess.Popen([XVFB, f":{num}", "-screen", "0", f"{SCREEN_W}x{SCREEN_H}x24",
                                     "-nolisten", "tcp", "-noreset"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    Xlib.display.Display(f":{num}").close()
                    break
                except Exception:  # not accepting clients yet
                    time.sleep(0.1)
            if proc.poll() is None and time.monotonic() < deadline:
                self.procs.append(proc)
                self.num, self.display = num, f":{num}"
                break
            proc.kill()
            proc.wait()
        else:
            raise AssertionError("Xvfb did not start")
        self.env = dict(os.environ, DISPLAY=self.display)
        self.env.pop("WAYLAND_DISPLAY", None)
        self.env.pop("PYSTRAY_BACKEND", None)
        if tray:
            for attempt in range(2):  # trayer now and then starts before Xvfb takes clients
                trayer = subprocess.Popen(
                    [TRAYER, "--edge", "top", "--align", "right", "--widthtype", "request",
                     "--height", "32", "--transparent", "false", "--tint", "0x303030",
                     "--SetDockType", "true"],
                    env=self.env, stdout=subprocess.DEVNULL,
                    stderr=open(tmp / f"trayer{attempt}.log", "wb"))
                self.procs.append(trayer)
                try:
                    _wait(lambda: self.tray_owner(), 15, "trayer to own the system tray")
                    break
                except AssertionError:
                    trayer.kill()
                    trayer.wait()
                    if attempt:
                        raise AssertionError(
                            f"trayer did not start: {(tmp / 'trayer1.log').read_text()[-500:]}")

    def xlib(self):
        import Xlib.display

        return Xlib.display.Display(self.display)

    def tray_owner(self) -> int | None:
        from deejai.plugins.tray.app import system_tray_owner

        try:
            return system_tray_owner(self.display)
        except Exception:  # Xvfb not accepting clients yet
            return None

    def find(self, wm_class: str):
        """Windows whose WM_CLASS contains ``wm_class``: [(window id, name, x, y, w, h,
        parent classes)]."""
        d = self.xlib()
        out = []
        try:
            root = d.screen().root

            def walk(win, parents):
                try:
                    cls = win.get_wm_class() or ()
                    name = win.get_wm_name()
                    children = win.query_tree().children
                except Exception:
                    return
                if wm_class in cls:
                    geo = win.get_geometry()
                    pos = win.translate_coords(root, 0, 0)
                    out.append((win.id, name, -pos.x, -pos.y, geo.width, geo.height, parents))
                for child in children:
                    walk(child, parents + list(cls))

            walk(root, [])
        finally:
            d.close()
        return out

    def screenshot(self, path: Path, crop=None) -> Path:
        from PIL import Image

        raw = path.with_suffix(".full.png")
        subprocess.run(["import", "-display", self.display, "-window", "root", str(raw)],
                       check=True, capture_output=True, timeout=30)
        with Image.open(raw) as img:
            (img.crop(crop) if crop else img).convert("RGB").save(path)
        raw.unlink()
        target = os.environ.get("DEEJAI_SCREENSHOT_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        import Xlib.X

        d = self.xlib()
        try:
            raw = d.screen().root.get_image(x, y, 1, 1, Xlib.X.ZPixmap, 0xFFFFFFFF)
            b, g, r = raw.data[0], raw.data[1], raw.data[2]
        finally:
            d.close()
        return r, g, b

    def click(self, x: int, y: int, button: int) -> None:
        import Xlib.X
        from Xlib.ext import xtest

        d = self.xlib()
        try:
            d.screen().root.warp_pointer(x, y)
            d.sync()
            xtest.fake_input(d, Xlib.X.ButtonPress, button)
            d.sync()
            time.sleep(0.05)
            xtest.fake_input(d, Xlib.X.ButtonRelease, button)
            d.sync()
        finally:
            d.close()

    def key(self, keysym_name: str) -> None:
        import Xlib.X
        import Xlib.XK
        from Xlib.ext import xtest

        d = self.xlib()
        try:
            code = d.keysym_to_keycode(Xlib.XK.string_to_keysym(keysym_name))
            xtest.fake_input(d, Xlib.X.KeyPress, code)
            d.sync()
            time.sleep(0.03)
            xtest.fake_input(d, Xlib.X.KeyRelease, code)
            d.sync()
        finally:
            d.close()

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def xsession(tmp_path):
    s = XSession(tmp_path)
    yield s
    s.close()


def _on_screen(x: int, y: int, w: int, h: int) -> bool:
    """Whether the window at (x, y) of size w x h lies wholly on the Xvfb screen."""
    return x >= 0 and y >= 0 and x + w <= SCREEN_W and y + h <= SCREEN_H


def _close_enough(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@needs_x
def test_no_tray_host_is_one_line_and_exit_1(tmp_path):
    s = XSession(tmp_path, tray=False)
    try:
        res = subprocess.run(_tray_cmd("--backend", "xorg", "--wait-for-tray", "0"), env=s.env,
                             capture_output=True, text=True, timeout=60)
    finally:
        s.close()
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("deejai: error: no system tray on this display")
    # with a wait, it says what it waits for before giving up
    s = XSession(tmp_path, tray=False)
    try:
        res = subprocess.run(_tray_cmd("--backend", "xorg", "--wait-for-tray", "1"), env=s.env,
                             capture_output=True, text=True, timeout=60)
    finally:
        s.close()
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 2, res.stderr
    assert lines[0] == ("deejai: waiting up to 1 s for a system tray (a panel with a notification "
                        "area) to start...")
    assert lines[1].startswith("deejai: error: no system tray on this display")


@needs_x
def test_xorg_icon_docks_and_follows_the_daemon(daemon, xsession, library, tmp_path):
    """The real icon in a real tray: idle, scanning (percent in the title), idle with tracks,
    then "not running" after the daemon stops - the tray keeps running."""
    log = tmp_path / "tray.log"
    tray = subprocess.Popen(_tray_cmd("--backend", "xorg"), env=xsession.env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def icon(prefix=""):
            if tray.poll() is not None:
                raise AssertionError(f"the tray exited: {log.read_text()}")
            wins = [w for w in xsession.find("deejaiSystemTrayIcon") if w[1].startswith(prefix)]
            return wins[0] if wins else None

        win = _wait(lambda: icon("deejai: idle"), 60, "the idle icon")
        _, name, x, y, w, h, parents = win
        assert "trayer" in parents, f"not docked in the tray: {parents}"
        assert name == "deejai: idle: 0 tracks"
        assert 0 < w <= 64 and 0 < h <= 64 and _on_screen(x, y, w, h)

        def disc(colour):
            # a pixel on the disc, above the glyph
            return _close_enough(xsession.pixel(x + w // 2, y + max(2, h // 6)), colour)

        _wait(lambda: disc(icons.COLOURS["idle"]), 20, "the blue idle picture")
        xsession.screenshot(tmp_path / "tray-xorg-idle.png", crop=TOP_RIGHT)

        daemon.client.scan(paths=[str(library)], workers=1)
        win = _wait(lambda: icon("deejai: scanning"), 60, "the scanning title", 0.02)
        titles = {win[1]}
        _wait(lambda: disc(icons.COLOURS["scanning"]), 20, "the amber scanning picture", 0.02)
        xsession.screenshot(tmp_path / "tray-xorg-scanning.png", crop=TOP_RIGHT)
        deadline = time.monotonic() + 180
        while True:
            current = icon()
            titles.add(current[1])
            if current[1].startswith("deejai: idle"):
                break
            assert time.monotonic() < deadline, f"the scan never ended: {titles}"
            time.sleep(0.05)
        assert current[1] == "deejai: idle: 6 tracks"
        assert any("%" in t for t in titles), titles
        _wait(lambda: disc(icons.COLOURS["idle"]), 20, "the blue picture again")

        daemon.stop()
        _wait(lambda: icon("deejai: daemon not running"), 30, "the not-running title")
        _wait(lambda: disc(icons.COLOURS["not_running"]), 20, "the grey picture")
        xsession.screenshot(tmp_path / "tray-xorg-not-running.png", crop=TOP_RIGHT)
        time.sleep(1.0)
        assert tray.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        tray.send_signal(signal.SIGTERM)
        try:
            tray.wait(15)
        except subprocess.TimeoutExpired:
            tray.kill()
            tray.wait()


def _has_gtk() -> bool:
    try:
        import gi

        gi.require_version("Gtk", "3.0")
    except (ImportError, ValueError):
        return False
    return shutil.which("dbus-run-session") is not None


@needs_x
@pytest.mark.skipif(not _has_gtk(), reason="needs PyGObject with GTK 3 and dbus-run-session")
def test_gtk_menu_opens_and_its_scan_item_starts_a_scan(daemon, xsession, library, tmp_path):
    """pystray's GTK backend draws the real menu: right-click the docked icon, screenshot the
    menu, then choose "Scan library now" with the keyboard and see the daemon scan."""
    log = tmp_path / "tray.log"
    tray = subprocess.Popen(["dbus-run-session", "--", *_tray_cmd("--backend", "gtk")],
                            env=xsession.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def panel():
            # trayer grows its panel when the icon docks, then moves it back to the right
            # edge: between the two the panel reaches past the screen, so only a panel that
            # lies on the screen and holds the idle icon is the one to click
            if tray.poll() is not None:
                raise AssertionError(f"the tray exited: {log.read_text()}")
            for _, _, px, py, pw, ph, _ in xsession.find("panel"):
                if pw > 8 and _on_screen(px, py, pw, ph):
                    cx, cy = px + pw - ph // 2, py + ph // 2
                    if _close_enough(xsession.pixel(cx, py + 4), icons.COLOURS["idle"], 60):
                        return cx, cy
            return None

        cx, cy = _wait(panel, 60, "trayer's panel to hold the idle icon")
        time.sleep(1.0)
        xsession.click(cx, cy, 3)
        time.sleep(1.5)
        xsession.screenshot(tmp_path / "tray-gtk-menu.png",
                            crop=(SCREEN_W - 300, 0, SCREEN_W, 240))
        xsession.key("Down")  # the first item that can be chosen: Scan library now
        xsession.key("Return")
        status = _wait(lambda: daemon.client.scan_status().get("job") and
                       daemon.client.scan_status(), 60, "a scan started from the menu")
        assert status["roots"] == [str(library)]
        _wait(lambda: daemon.client.scan_status()["state"] == "finished", 180, "the scan")
        assert tray.poll() is None, log.read_text()
    finally:
        tray.send_signal(signal.SIGTERM)
        try:
            tray.wait(15)
        except subprocess.TimeoutExpired:
            tray.kill()
            tray.wait()


XDOTOOL = shutil.which("xdotool")


def _xdotool(session: XSession, *args: str) -> str:
    return subprocess.run([XDOTOOL, *args], env=session.env, capture_output=True, text=True,
                          timeout=30, check=True).stdout


def _windows_named(session: XSession, name: str) -> list[str]:
    """Visible windows whose name contains ``name`` (xdotool exits 1 when there is none)."""
    out = subprocess.run([XDOTOOL, "search", "--onlyvisible", "--name", name], env=session.env,
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@needs_x
@pytest.mark.skipif(not XDOTOOL, reason="needs xdotool (apt-get install xdotool)")
@pytest.mark.skipif(not __import__("importlib").util.find_spec("tkinter"),
                    reason="the xorg backend's menu needs tkinter")
def test_xorg_clicks_open_the_menu_and_join_the_dots(daemon, xsession, library, tmp_path,
                                                     deejai_home):
    """Real clicks on the xorg icon, without PyGObject: a right click opens the Tk popup menu
    (screenshot), choosing Join the dots… there asks for two tracks in a dialog, and the
    playlist the daemon makes is the one `deejai playlist` makes for the same tracks; a left
    click runs the default item (Join the dots… again)."""
    daemon.client.scan(paths=[str(library)], workers=1)
    _wait(lambda: daemon.client.scan_status()["state"] == "finished", 180, "the scan")
    opener = Recorder(tmp_path)
    settings = deejai_home / "config" / "settings.toml"
    settings.write_text(settings.read_text() + "\n[tray]\njoin_with = \"dialog\"\n"
                        f"join_length = 2\nopener = \"{opener.script}\"\n", encoding="utf-8")
    ends = [str(library / "Artist 0" / "00 chord 0.mp3"), str(library / "Artist 1" /
                                                               "05 chord 5.mp3")]
    log = tmp_path / "tray.log"
    tray = subprocess.Popen(_tray_cmd("--backend", "xorg"), env=xsession.env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def icon():
            if tray.poll() is not None:
                raise AssertionError(f"the tray exited: {log.read_text()}")
            wins = [w for w in xsession.find("deejaiSystemTrayIcon")
                    if w[1].startswith("deejai: idle: 6") and "trayer" in w[6]]
            return wins[0] if wins else None

        _, _, x, y, w, h, _ = _wait(icon, 60, "the docked idle icon")
        cx, cy = x + w // 2, y + h // 2

        def answer_dialog():
            for end in ends:  # the dialog asks twice: from, then to
                win = _wait(lambda: _windows_named(xsession, "join the dots"), 30,
                            "the dialog")[0]
                _xdotool(xsession, "windowfocus", "--sync", win)
                time.sleep(0.3)
                _xdotool(xsession, "type", "--delay", "5", end)
                _xdotool(xsession, "key", "Return")
                _wait(lambda: win not in _windows_named(xsession, "join the dots"), 30,
                      "the dialog to close")

        # right click: the menu, drawn by Tk, beside the icon
        xsession.click(cx, cy, 3)
        menu = _wait(lambda: [m for m in xsession.find("Menu") if m[4] > 50], 30, "the menu")[0]
        _, _, mx, my, mw, mh, _ = menu
        assert my <= cy + 4 and mx <= cx <= mx + mw + 40, (menu, cx, cy)  # at the pointer
        time.sleep(0.5)
        xsession.screenshot(tmp_path / "tray-xorg-menu.png",
                            crop=(SCREEN_W - 300, 0, SCREEN_W, 280))
        # keyboard traversal skips the greyed status line: Scan library now, Join the dots…
        xsession.key("Down")
        xsession.key("Down")
        xsession.key("Return")
        answer_dialog()
        first = Path(opener.opened(1, 120)[0])
        _wait(lambda: not [m for m in xsession.find("Menu") if m[4] > 50], 10, "the menu to close")

        cli = subprocess.run([PY, "-m", "deejai.ui_cli.main", "playlist", "--from", ends[0],
                              "--to", ends[1], "-n", "2", "--format", "m3u8"],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert cli.returncode == 0, cli.stderr
        expected = [line for line in cli.stdout.splitlines() if line and not line.startswith("#")]
        assert [str(p) for p in read_playlist_paths(first)] == expected
        assert expected[0] == ends[0] and expected[-1] == ends[1] and len(expected) == 4

        # left click: the default item, Join the dots… while the daemon runs
        xsession.click(cx, cy, 1)
        answer_dialog()
        assert len(opener.opened(2, 120)) == 2
        assert tray.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        tray.send_signal(signal.SIGTERM)
        try:
            tray.wait(15)
        except subprocess.TimeoutExpired:
            tray.kill()
            tray.wait()
