"""The Kivy app's parts that need no window: platform decisions, view models, the backend
(against a real daemon process and a real in-process Engine) and the APK staging helper."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deejai.engine.errors import (
    ConnectionLost,
    DaemonError,
    DaemonNotRunning,
    LibraryEmptyError,
    TrackNotFoundError,
)
from deejai.ui_kivy import platform as plat
from deejai.ui_kivy import viewmodel as vm
from deejai.ui_kivy.backend import Backend

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- platform
@pytest.mark.parametrize(
    "environ, sys_platform, expected",
    [
        ({"ANDROID_ARGUMENT": "/data/user/0/org.deejai.deejai/files/app"}, "linux", "android"),
        ({"ANDROID_PRIVATE": "/data/user/0/org.deejai.deejai/files"}, "linux", "android"),
        ({}, "ios", "ios"),
        ({}, "linux", "linux"),
        ({}, "darwin", "macosx"),
        ({}, "win32", "win"),
        ({}, "sunos5", "unknown"),
    ],
)
def test_detect_platform(environ, sys_platform, expected):
    assert plat.detect_platform(environ, sys_platform) == expected
    assert plat.is_mobile(expected) == (expected in ("android", "ios"))


def test_this_machine_is_desktop():
    assert plat.detect_platform() == "linux"
    assert plat.app_storage_dir() is None


def test_android_paths_without_the_android_module(monkeypatch, tmp_path):
    """Outside an APK ``android.storage`` is missing: the p4a environment variable is used."""
    monkeypatch.setenv("ANDROID_PRIVATE", str(tmp_path / "private"))
    assert plat.app_storage_dir("android") == tmp_path / "private"
    assert plat.music_dir("android") == Path("/sdcard/Music")


def test_apply_storage_env_on_a_phone(monkeypatch, tmp_path):
    env = {"ANDROID_PRIVATE": str(tmp_path)}
    monkeypatch.setenv("ANDROID_PRIVATE", str(tmp_path))
    home = plat.apply_storage_env("android", env)
    assert home == tmp_path / "deejai" and env["DEEJAI_HOME"] == str(home)
    # a DEEJAI_HOME the user set wins; the desktop changes nothing
    assert plat.apply_storage_env("android", {"DEEJAI_HOME": "/x"}) is None
    assert plat.apply_storage_env("linux", {}) is None


def test_music_dir_on_desktop_is_platformdirs():
    import platformdirs

    assert plat.music_dir("linux") == Path(platformdirs.user_music_dir())


def test_run_plan():
    desktop = plat.run_plan()
    assert (desktop.embedded, desktop.start_daemon) == (False, True)
    assert plat.run_plan(embedded=True).embedded is True
    assert plat.run_plan(start_daemon=False).start_daemon is False
    for phone in ("android", "ios"):
        plan = plat.run_plan(platform=phone)
        assert plan.embedded is True and plan.start_daemon is False
    assert desktop.index_backend == "faiss"  # faiss-cpu is a dependency


def test_index_backend_without_faiss():
    """Where FAISS cannot be imported (phones) the NumPy index is chosen."""
    code = ("import sys; sys.modules['faiss'] = None; "
            "from deejai.ui_kivy.platform import index_backend; print(index_backend('android'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


# ----------------------------------------------------------------------------- view models
def test_format_duration_and_eta():
    assert vm.format_duration(0) == "0:00"
    assert vm.format_duration(61.4) == "1:01"
    assert vm.format_duration(3725) == "1:02:05"
    assert vm.format_duration(None) == "-" and vm.format_duration(float("nan")) == "-"
    assert vm.format_eta(19) == "ETA 0:19" and vm.format_eta(None) == "ETA -"


def test_library_summary_reads_engine_status():
    text = vm.library_summary({"tracks": 1234, "errors": 3, "hours": 81.26, "model": "m"})
    assert text == {"tracks": "1,234", "hours": "81.3", "errors": "3", "model": "m"}
    assert vm.library_summary({"tracks": 2, "errors": 0, "hours": 0.02})["hours"] == "0.02"
    assert vm.library_summary({})["tracks"] == "0"


def test_scan_progress_text():
    view = vm.scan_progress({"done": 12, "total": 90, "errors": 1, "rate": 4.06, "eta_s": 19.2})
    assert view["value"] == 12 and view["max"] == 90
    assert view["text"] == "12 / 90 files · 1 error · 4.1 files/s · ETA 0:19"
    assert vm.scan_progress({"done": 0, "total": 0})["max"] == 1  # never a zero-length bar


def test_waypoint_spec_uses_the_picked_id_only_while_its_label_shows():
    track = {"id": 7, "artist": "A", "title": "T", "album": "B", "path": "/m/a.mp3"}
    label = vm.track_label(track)
    assert label == "A - T (B)"
    assert vm.waypoint_spec(label, track) == 7
    assert vm.waypoint_spec(label + "x", track) == label + "x"
    assert vm.waypoint_spec("  ", None) is None
    assert vm.track_label({"path": "/m/x y.mp3"}) == "x y"


def test_playlist_rows_and_bars():
    playlist = {"kind": "join", "entries": [
        {"id": 1, "path": "/a.mp3", "artist": "A", "title": "One", "duration_s": 200, "distance": 0},
        {"id": 2, "path": "/b.mp3", "artist": "", "title": "", "duration_s": 61, "distance": 0.2},
        {"id": 3, "path": "/c.mp3", "artist": "C", "title": "Three", "duration_s": 1, "distance": 0.4},
    ]}
    rows = vm.playlist_rows(playlist)
    assert [r["track_id"] for r in rows] == [1, 2, 3]
    assert [r["label"] for r in rows] == ["A - One", "b", "C - Three"]
    assert [r["fraction"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[1]["duration"] == "1:01" and rows[2]["distance"] == "0.400"
    assert vm.playlist_title(playlist) == "Join the dots: 3 tracks, 4:22"
    assert vm.distance_fractions([0, 0]) == [0.0, 0.0]


def test_default_export_path_and_folders(tmp_path):
    path = vm.default_export_path(tmp_path, {"kind": "radio"}, now=0)
    assert Path(path).parent == tmp_path and Path(path).name.startswith("deejai-radio-")
    assert path.endswith(".m3u8")
    assert vm.split_folders(f"/a\n /b {os.pathsep}/c \n\n") == ["/a", "/b", "/c"]


# ----------------------------------------------------------------------------- backend
def test_embedded_backend_on_an_empty_library():
    events, states = [], []
    backend = Backend(embedded=True, index_backend="numpy",
                      on_event=lambda e, p: events.append(e), on_connection=lambda s, m: states.append(s))
    try:
        status = backend.submit("status").result(60)
        assert status["tracks"] == 0
        assert states == ["connected"]
        with pytest.raises(LibraryEmptyError):
            backend.submit("radio", seeds=["anything"]).result(60)
        with pytest.raises(TrackNotFoundError):
            backend.call("track", track="nothing like this")
        assert backend.connected  # an engine error is not a lost engine
    finally:
        backend.close()


def test_no_daemon_and_not_allowed_to_start_one(tmp_path):
    backend = Backend(socket=str(tmp_path / "none.sock"), start_daemon=False)
    try:
        with pytest.raises(DaemonError, match="deejai serve"):
            backend.call("status")
        assert not backend.connected
    finally:
        backend.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_backend_starts_a_daemon_and_stops_it(tmp_path):
    """No daemon answers: the backend starts ``deejai serve``, talks to it, stops it on close."""
    sock = tmp_path / "run" / "d.sock"
    sock.parent.mkdir()
    states = []
    backend = Backend(socket=str(sock), on_connection=lambda s, m: states.append((s, m)))
    try:
        status = backend.call("status")
        assert status["tracks"] == 0
        proc = backend.daemon_process
        assert proc is not None and proc.poll() is None
        assert backend.daemon_command()[-2:] == ["--socket", str(sock)]
        assert states[0] == ("connected", f"daemon at {vm.contract_home(sock)}")
        # an application error from the daemon keeps the connection
        with pytest.raises(TrackNotFoundError):
            backend.call("track", track="nothing like this")
        assert backend.connected
    finally:
        backend.close()
    deadline = time.monotonic() + 15
    while _alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is not None, "the daemon outlived the app's backend"


def test_lost_daemon_is_reported_then_reconnected(tmp_path):
    """Kill the daemon between two calls: one DaemonError, then the next daemon is used."""
    sock = tmp_path / "run" / "d.sock"
    sock.parent.mkdir()
    states = []
    backend = Backend(socket=str(sock), on_connection=lambda s, m: states.append(s))
    second = None
    try:
        backend.call("status")
        first = backend.daemon_process
        first.kill()
        first.wait(10)
        with pytest.raises(ConnectionLost, match="daemon"):
            backend.call("status")
        assert not backend.connected and states[-1] == "disconnected"
        # the backend starts a daemon once only; a user (or systemd) starts the next one
        with pytest.raises(DaemonNotRunning, match="no deejai daemon answers"):
            backend.call("status")
        second = subprocess.Popen(backend.daemon_command(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert backend.call("status")["tracks"] == 0
                break
            except DaemonError:
                assert time.monotonic() < deadline, "the second daemon never answered"
                time.sleep(0.3)
        assert states[-1] == "connected"
    finally:
        backend.close()
        if second is not None:
            second.terminate()
            second.wait(15)


# ----------------------------------------------------------------------------- packaging
def test_stage_for_buildozer(tmp_path):
    """The staged folder has main.py, the spec and importable deejai packages, no tests."""
    from deejai.ui_kivy.stage import stage

    main_py = stage(tmp_path / "apk")
    src = main_py.parent
    assert "--embedded" in main_py.read_text()
    spec = (src / "buildozer.spec").read_text()
    assert "android.permissions = READ_MEDIA_AUDIO,READ_EXTERNAL_STORAGE" in spec
    assert "com.google.ai.edge.litert:litert:" in spec
    staged = src / "deejai" / "models" / "msd-musicnn-v2"
    for name in ("model.tflite", "model-fp32.tflite", "card.json", "LICENSE"):
        assert (staged / name).stat().st_size > 1000, name
    assert not (staged / "golden.npz").exists()
    assert not list(src.rglob("__pycache__"))
    for kv in ("app.kv", "widgets.kv", "library.kv", "join.kv", "playlist.kv"):
        assert (src / "deejai" / "ui_kivy" / kv).is_file()
    code = ("import deejai.engine.service as s, deejai.ui_kivy.backend as b, deejai.models as m; "
            "print(s.__file__); print(b.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True,
                         check=True)
    assert all(line.startswith(str(src)) for line in out.stdout.split()), out.stdout


def test_console_script_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["deejai-kivy"] == "deejai.ui_kivy.app:main"
    assert any(dep.startswith("kivy") for dep in project["optional-dependencies"]["kivy"])


def test_app_help_needs_no_window():
    out = subprocess.run([sys.executable, "-m", "deejai.ui_kivy.app", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--embedded" in out.stdout and "--socket" in out.stdout


def test_contract_home():
    assert vm.contract_home("/home/me/Music", home="/home/me") == "~/Music"
    assert vm.contract_home("/home/me", home="/home/me/") == "~"
    assert vm.contract_home("/home/meg/Music", home="/home/me") == "/home/meg/Music"
    assert os.path.expanduser(vm.contract_home(Path.home() / "x.m3u8")) == str(Path.home() / "x.m3u8")


def test_app_opens_on_a_chosen_screen_and_the_tray_asks_for_join():
    from deejai.plugins.tray.desktop import kivy_app_command
    from deejai.ui_kivy.app import parse_args

    assert parse_args([]).screen == "library"
    assert parse_args(["--screen", "join"]).screen == "join"
    with pytest.raises(SystemExit):
        parse_args(["--screen", "nowhere"])
    command = kivy_app_command("join")
    assert command is not None and command[-2:] == ["--screen", "join"]
