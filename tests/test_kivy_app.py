"""The Kivy app in a real window (Xvfb + Mesa), driven through Kivy's own widget API.

Each flow runs the app in a subprocess (a Kivy app cannot run twice in one process): this file
is also the driver script (``python tests/test_kivy_app.py --scenario ...``). The driver types
into TextInputs, presses buttons (``dispatch("on_press")`` / ``trigger_action``), moves
sliders, waits for the engine's answers on the UI thread, saves a PNG of each screen and writes
what the screens showed to a JSON file. The tests then check that against the engine itself:
the playlist shown must be exactly what ``Engine.join`` / ``Engine.radio`` return for the same
parameters and seed.

Flows: through a daemon the app starts itself; ``--embedded``; and a daemon killed mid-use
(the app shows the error, then recovers when a daemon answers again).

Screenshots go to a temporary folder; set ``DEEJAI_KIVY_SCREENSHOTS=docs/img`` to refresh the
ones in the documentation. Needs Kivy (``pip install -e ".[kivy]"``) and the ``Xvfb`` binary
(Debian: ``xvfb xauth libgl1-mesa-dri libegl1 libgles2``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
DRIVER_TIMEOUT_S = 240
WINDOW = "480x800"
SCREENS = ("library", "library-scanning", "join", "radio", "playlist")

# --------------------------------------------------------------------------- the driver
# Runs inside the app's process; uses nothing from pytest.


def _wait(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> tuple:
    return ("wait", pred, what, timeout)


def _run_steps(app: Any, steps: Iterator[Any], out: dict, out_path: Path) -> None:
    """Advance the ``steps`` generator from Kivy's clock until it ends, then stop the app."""
    from kivy.clock import Clock

    state: dict[str, Any] = {"wait": None, "sleep_until": 0.0}

    def finish(error: str | None) -> None:
        out["error"] = error
        out_path.write_text(json.dumps(out, indent=2, default=str))
        event.cancel()
        app.stop()

    def tick(_dt: float) -> None:
        try:
            now = time.monotonic()
            if now < state["sleep_until"]:
                return
            if state["wait"] is not None:
                pred, what, deadline = state["wait"]
                if not pred():
                    if now > deadline:
                        raise TimeoutError(f"timed out waiting for {what}; message: {app.message!r}")
                    return
                state["wait"] = None
            step = next(steps)
            if isinstance(step, (int, float)):
                state["sleep_until"] = now + float(step)
            elif isinstance(step, tuple) and step[0] == "wait":
                _, pred, what, timeout = step
                state["wait"] = (pred, what, now + timeout)
        except StopIteration:
            finish(None)
        except Exception:
            finish(traceback.format_exc())

    event = Clock.schedule_interval(tick, 0.05)


def _press(button: Any) -> None:
    button.dispatch("on_press")


def _shot(app: Any, shots: Path, name: str, out: dict) -> None:
    path = shots / f"{name}.png"
    app.root.export_to_png(str(path))
    out.setdefault("screenshots", []).append(str(path))


def _pick(picker: Any, query: str, title: str) -> Iterator[Any]:
    """Type ``query`` into a TrackPicker, wait for suggestions, pick the one titled ``title``."""
    picker.ids.field.text = query
    yield _wait(lambda: any(s.get("title") == title for s in picker.suggestions),
                f"a suggestion titled {title!r} for {query!r}", 60)
    buttons = [b for b in picker.ids.suggestions.children if b.track.get("title") == title]
    buttons[0].trigger_action(0)
    yield _wait(lambda: picker.picked is not None, f"{title!r} picked", 10)


def _pick_with_enter(picker: Any, query: str, out: dict, key: str) -> Iterator[Any]:
    """Type ``query``, wait for suggestions, press Enter: the first suggestion is picked."""
    picker.ids.field.text = query
    yield _wait(lambda: len(picker.suggestions) > 0, f"suggestions for {query!r}", 60)
    first = picker.suggestions[0]
    picker.ids.field.dispatch("on_text_validate")
    yield _wait(lambda: picker.picked is not None, f"Enter to pick for {query!r}", 10)
    out[key] = {"first": first.get("title"), "picked": picker.picked.get("title")}


def _set_slider(value_slider: Any, value: float) -> None:
    value_slider.ids.slider.value = value  # the Slider widget itself, as a finger would move it


def _playlist_after(app: Any, before: Any) -> Callable[[], bool]:
    screen = app.root.ids.playlist
    return lambda: screen.playlist and screen.playlist is not before and screen.shown_ids()


def _record_playlist(app: Any) -> dict:
    screen = app.root.ids.playlist
    return {
        "kind": screen.playlist.get("kind"),
        "params": screen.playlist.get("params"),
        "shown_ids": screen.shown_ids(),
        "rows": [dict(r) for r in screen.ids.rows.data],
        "title": screen.title,
    }


def _scan_steps(app: Any, lib: str, shots: Path, out: dict) -> Iterator[Any]:
    library = app.root.ids.library
    yield _wait(lambda: app.connected, "the engine to be reachable", 90)
    library.ids.folders.text = lib
    seen: list[tuple[float, float, str]] = []
    library.bind(progress_text=lambda w, text: seen.append((w.progress_value, w.progress_max, text)))
    _press(library.ids.scan_button)
    yield _wait(lambda: library.scanning, "the scan to start", 10)
    yield _wait(lambda: 0 < library.progress_value < library.progress_max or not library.scanning,
                "a progress event", 120)
    if library.scanning:
        _shot(app, shots, "library-scanning", out)
    yield _wait(lambda: not library.scanning and library.last_summary, "scan.finished", 180)
    yield _wait(lambda: library.tracks not in ("-", "0"), "the track count", 30)
    yield 0.3
    out["scan"] = {"summary": dict(library.last_summary), "progress": seen,
                   "tracks": library.tracks, "hours": library.hours, "errors": library.errors}
    _shot(app, shots, "library", out)


def _join_steps(app: Any, shots: Path, out: dict) -> Iterator[Any]:
    app.go("join")
    screen = app.root.ids.join
    yield 0.6
    yield from _pick(screen.ids.from_track, "chord 0", "Chord 0")
    yield from _pick_with_enter(screen.ids.via_track, "beat", out, "via")
    _set_slider(screen.ids.n_slider, 3)
    _set_slider(screen.ids.noise_slider, 0.3)
    screen.ids.to_track.ids.field.text = "noise"
    yield _wait(lambda: len(screen.ids.to_track.suggestions) >= 2, "suggestions for 'noise'", 60)
    yield 0.2
    _shot(app, shots, "join", out)
    yield from _pick(screen.ids.to_track, "noise", "Noise 6")
    before = app.root.ids.playlist.playlist
    _press(screen.ids.make_button)
    yield _wait(_playlist_after(app, before), "the join playlist", 120)
    yield 0.6
    out["join"] = _record_playlist(app)
    _shot(app, shots, "playlist", out)

    # an ambiguous query is a message, not a crash
    app.go("join")
    yield 0.5
    app.show_message("")
    screen.ids.from_track.ids.field.text = "Artist 1"
    _press(screen.ids.make_button)
    yield _wait(lambda: "matches" in app.message, "the ambiguous-track message", 60)
    out["ambiguous_message"] = app.message
    screen.ids.from_track.clear()
    yield 0.3


def _radio_steps(app: Any, shots: Path, out: dict) -> Iterator[Any]:
    app.go("radio")
    app.show_message("")
    screen = app.root.ids.radio
    yield 0.6
    yield from _pick(screen.ids.seed_track, "bass", "Bass 4")
    _set_slider(screen.ids.n_slider, 6)
    _set_slider(screen.ids.lookback_slider, 2)
    _set_slider(screen.ids.noise_slider, 0.2)
    yield 0.2
    _shot(app, shots, "radio", out)
    before = app.root.ids.playlist.playlist
    _press(screen.ids.make_button)
    yield _wait(_playlist_after(app, before), "the radio playlist", 120)
    yield 0.6
    out["radio"] = _record_playlist(app)


def _export_and_play_steps(app: Any, out_dir: Path, out: dict) -> Iterator[Any]:
    screen = app.root.ids.playlist
    target = out_dir / "saved" / "radio.m3u8"
    screen.ids.export_path.text = str(target)
    _press(screen.ids.save_button)
    yield _wait(lambda: screen.saved_path, "the M3U8 file", 30)
    out["saved_path"] = screen.saved_path
    _press(screen.ids.play_button)
    yield 0.5
    out["now_playing"] = screen.now_playing
    out["playing_index"] = screen.playing_index
    _press(screen.ids.skip_button)
    yield 0.3
    out["after_skip_index"] = screen.playing_index
    _press(screen.ids.stop_button)
    yield 0.2


def _empty_library_steps(app: Any, out: dict) -> Iterator[Any]:
    """Make a radio before anything is scanned: a message, not a crash."""
    yield _wait(lambda: app.connected, "the engine to be reachable", 90)
    app.go("radio")
    screen = app.root.ids.radio
    yield 0.5
    screen.ids.seed_track.ids.field.text = "anything"
    _press(screen.ids.make_button)
    yield _wait(lambda: "empty" in app.message and not screen.busy, "the empty-library message", 60)
    out["empty_message"] = app.message
    screen.ids.seed_track.clear()
    app.show_message("")
    app.go("library")
    yield 0.5


def _full_flow(app: Any, opts: argparse.Namespace, out: dict) -> Iterator[Any]:
    shots, out_dir = Path(opts.shots), Path(opts.out).parent
    yield from _empty_library_steps(app, out)
    yield from _scan_steps(app, opts.lib, shots, out)
    yield from _join_steps(app, shots, out)
    yield from _radio_steps(app, shots, out)
    yield from _export_and_play_steps(app, out_dir, out)
    # Escape (Android's back button) returns to the Library screen instead of quitting
    from kivy.core.window import Window

    app.go("playlist")
    yield 0.3
    Window.dispatch("on_keyboard", 27, 0, None, [])
    yield 0.3
    out["after_escape"] = app.root.ids.screens.current
    proc = app.backend.daemon_process
    out["mode"] = app.backend.mode
    out["started_daemon_pid"] = proc.pid if proc is not None else None


def _daemon_answers(sock: str) -> bool:
    from deejai.engine.rpc import Client

    client = Client.connect_or_none(sock, timeout=1.0)
    if client is None:
        return False
    client.close()
    return True


def _kill_flow(app: Any, opts: argparse.Namespace, out: dict) -> Iterator[Any]:
    shots = Path(opts.shots)
    screen = app.root.ids.radio
    yield _wait(lambda: app.connected, "the daemon connection", 60)
    app.go("radio")
    yield 0.6
    yield from _pick(screen.ids.seed_track, "chord", "Chord 5")
    _set_slider(screen.ids.n_slider, 5)
    before = app.root.ids.playlist.playlist
    _press(screen.ids.make_button)
    yield _wait(_playlist_after(app, before), "a playlist before the kill", 60)
    out["before_kill"] = _record_playlist(app)

    os.kill(opts.daemon_pid, signal.SIGKILL)
    out["killed_pid"] = opts.daemon_pid
    app.go("radio")
    yield 0.6
    app.show_message("")
    _press(screen.ids.make_button)
    yield _wait(lambda: app.message and not screen.busy, "the error message", 60)
    out["error_message"] = app.message
    out["error_is_red"] = app.root.ids.message_bar.error
    out["connected_after_kill"] = app.connected
    yield _wait(lambda: not app.connected, "the lost-daemon state", 10)
    out["connection_after_kill"] = app.connection
    _shot(app, shots, "daemon-lost", out)

    log = open(Path(opts.out).parent / "daemon2.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "deejai.ui_cli.main", "serve",
                             "--socket", opts.socket], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out["restarted_pid"] = proc.pid
    yield _wait(lambda: _daemon_answers(opts.socket), "the restarted daemon", 60)
    before = app.root.ids.playlist.playlist
    app.go("radio")
    yield 0.6
    _press(screen.ids.make_button)
    yield _wait(_playlist_after(app, before), "a playlist after the daemon came back", 60)
    out["after_restart"] = _record_playlist(app)
    out["message_after_restart"] = app.message  # "lost the daemon" went with the lost daemon
    out["connected_after_restart"] = app.connected
    out["connection_after_restart"] = app.connection


def _tap(x: float, y: float) -> None:
    """A real touch through Kivy's event loop (kivy.tests.common.UnitTestTouch)."""
    from kivy.tests.common import UnitTestTouch

    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()


def _pinch(view: Any, factor: float) -> None:
    """Two touches around the map's centre moving apart by ``factor``."""
    from kivy.tests.common import UnitTestTouch

    cx, cy = view.to_window(*view.center)
    a, b = UnitTestTouch(cx - 40, cy), UnitTestTouch(cx + 40, cy)
    a.touch_down()
    b.touch_down()
    for step in range(1, 9):
        d = 40 * (1 + (factor - 1) * step / 8)
        a.touch_move(cx - d, cy)
        b.touch_move(cx + d, cy)
    b.touch_up()
    a.touch_up()


def _drag(view: Any, dx: float, dy: float) -> None:
    from kivy.tests.common import UnitTestTouch

    cx, cy = view.to_window(*view.center)
    t = UnitTestTouch(cx, cy)
    t.touch_down()
    for step in range(1, 9):
        t.touch_move(cx + dx * step / 8, cy + dy * step / 8)
    t.touch_up()


def _tour_flow(app: Any, opts: argparse.Namespace, out: dict) -> Iterator[Any]:
    """Every screen of an already scanned library, with real taps on the map."""
    from kivy.uix.screenmanager import NoTransition

    shots, prefix = Path(opts.shots), opts.prefix
    app.root.ids.screens.transition = NoTransition()  # no screenshot half-way through a slide
    library = app.root.ids.library
    yield _wait(lambda: app.connected, "the engine to be reachable", 90)
    library.refresh()
    yield _wait(lambda: library.tracks not in ("-", "0"), "the track count", 60)
    yield 0.5
    _shot(app, shots, f"{prefix}library", out)

    app.go("map")
    screen = app.root.ids.map
    view = screen.ids.view
    yield _wait(lambda: len(view.xy) > 0, "the map's dots", 120)
    yield 0.6
    _shot(app, shots, f"{prefix}map", out)
    ids = [int(i) for i in screen.points["ids"]]
    titles = screen.points["title"]
    xs = screen.points["x"]
    a, b = ids[xs.index(min(xs))], ids[xs.index(max(xs))]  # the two ends of the map
    join = app.root.ids.join
    _set_slider(join.ids.n_slider, 4)  # the map joins with the Join screen's settings
    _set_slider(join.ids.noise_slider, 0)
    for track in (a, b):
        _tap(*view.dot_window_pos(track))
        yield 0.3
    yield _wait(lambda: view.path and not screen.busy, "the path between two tapped dots", 120)
    yield 0.5
    out["map_join"] = {"ends": [a, b], "selection": list(view.selection), "path": list(view.path),
                       "params": dict(app.root.ids.playlist.playlist.get("params", {})),
                       "playlist_ids": app.root.ids.playlist.shown_ids(), "info": screen.info}
    _shot(app, shots, f"{prefix}map-path", out)

    zoom, centre = float(view.zoom), [float(c) for c in view.centre]
    _pinch(view, 1.8)
    yield 0.3
    out["pinch"] = {"before": zoom, "after": float(view.zoom)}
    _drag(view, 60, -40)
    yield 0.3
    out["drag"] = {"before": centre, "after": [float(c) for c in view.centre]}
    _shot(app, shots, f"{prefix}map-zoomed", out)
    view.fit()

    app.go("playlist")
    yield 0.6
    _shot(app, shots, f"{prefix}playlist", out)

    app.go("join")
    yield 0.6
    yield from _pick(join.ids.from_track, titles[ids.index(a)], titles[ids.index(a)])
    # suggestions open under "Via": Make must stay on the screen
    join.ids.via_track.ids.field.text = titles[ids.index(a)].split()[0]
    yield _wait(lambda: len(join.ids.via_track.suggestions) > 0, "suggestions for Via", 60)
    yield 0.3
    make = join.ids.make_button
    x0, y0 = make.to_window(*make.pos)
    out["make_button"] = {"window": [float(x0), float(y0), float(make.width), float(make.height)],
                          "window_size": [float(v) for v in app.root.size],
                          "suggestions": len(join.ids.via_track.suggestions)}
    _shot(app, shots, f"{prefix}join-suggestions", out)
    join.ids.via_track.clear()
    yield from _pick(join.ids.to_track, titles[ids.index(b)], titles[ids.index(b)])
    yield 0.3
    _shot(app, shots, f"{prefix}join", out)
    # an error belongs to its state: the ambiguous-name line goes once a playlist is made
    picked_from = join.ids.from_track.picked
    join.ids.from_track.ids.field.text = "Artist"
    _press(join.ids.make_button)
    yield _wait(lambda: "matches" in app.message and not join.busy, "the ambiguous-name error", 60)
    out["stale"] = {"error": app.message}
    join.ids.from_track.pick(picked_from)
    before = app.root.ids.playlist.playlist
    _press(join.ids.make_button)
    yield _wait(_playlist_after(app, before), "the playlist after the error", 60)
    out["stale"]["after"] = app.message
    app.go("join")
    yield 0.3

    app.go("radio")
    radio = app.root.ids.radio
    yield 0.6
    yield from _pick(radio.ids.seed_track, titles[ids.index(a)], titles[ids.index(a)])
    _set_slider(radio.ids.n_slider, 8)
    yield 0.3
    _shot(app, shots, f"{prefix}radio", out)

    app.go("map")
    yield 0.6
    screen.clear()
    _tap(*view.dot_window_pos(b))
    yield 0.3
    _press(screen.ids.radio_button)
    yield _wait(lambda: view.path and not screen.busy, "the radio walk from a dot", 120)
    yield 0.5
    out["map_radio"] = {"seed": b, "path": list(view.path),
                        "params": dict(app.root.ids.playlist.playlist.get("params", {}))}
    _shot(app, shots, f"{prefix}map-radio", out)

    # a playlist longer than the screen: a visible scroll bar and "N more below"
    app.go("radio")
    yield 0.6
    _set_slider(radio.ids.n_slider, len(ids) - 4)
    before = app.root.ids.playlist.playlist
    _press(radio.ids.make_button)
    yield _wait(_playlist_after(app, before), "a long radio playlist", 120)
    yield 0.6
    playlist = app.root.ids.playlist
    out["long_playlist"] = {"rows": len(playlist.ids.rows.data), "more": playlist.more_text}
    _shot(app, shots, f"{prefix}playlist-long", out)
    playlist.ids.rows.scroll_y = 0
    yield 0.4
    out["long_playlist"]["more_at_bottom"] = playlist.more_text


def driver_main(argv: list[str] | None = None) -> int:
    """Run one scenario of the app and write what it showed to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=("full", "kill", "tour"), required=True)
    parser.add_argument("--size", default=WINDOW)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--out", required=True)
    parser.add_argument("--shots", required=True)
    parser.add_argument("--lib", default="")
    parser.add_argument("--socket", default=None)
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--daemon-pid", type=int, default=0)
    opts = parser.parse_args(argv)
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    sys.path.insert(0, str(ROOT))
    from deejai.ui_kivy.app import build_app, parse_args

    app_args = ["--size", opts.size]
    if opts.embedded:
        app_args.append("--embedded")
    if opts.socket:
        app_args += ["--socket", opts.socket]
    if opts.scenario == "kill":
        app_args.append("--no-start-daemon")
    app = build_app(parse_args(app_args))
    out: dict[str, Any] = {"scenario": opts.scenario, "embedded": opts.embedded}
    flow = {"full": _full_flow, "kill": _kill_flow, "tour": _tour_flow}[opts.scenario]
    from kivy.clock import Clock

    Clock.schedule_once(
        lambda dt: _run_steps(app, flow(app, opts, out), out, Path(opts.out)), 0.5
    )
    app.run()
    return 0 if out.get("error") is None and "error" in out else 1


if __name__ == "__main__":
    sys.exit(driver_main())

# --------------------------------------------------------------------------- the tests

import pytest  # noqa: E402

pytestmark = [pytest.mark.kivy, pytest.mark.slow]


def _kivy_missing() -> str | None:
    import importlib.util

    # find_spec, not import: importing kivy here would write ~/.kivy in the test process
    if importlib.util.find_spec("kivy") is None:  # pragma: no cover - depends on the machine
        return "kivy is not installed; pip install -e '.[kivy]'"
    if shutil.which("Xvfb") is None:  # pragma: no cover
        return "the Xvfb binary is missing (apt-get install xvfb xauth libgl1-mesa-dri)"
    return None


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :199")


@pytest.fixture(scope="module")
def xvfb() -> Iterator[dict[str, str]]:
    """A virtual X server; yields the environment for a Kivy subprocess."""
    missing = _kivy_missing()
    if missing:
        pytest.skip(missing)
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1024x900x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb :{n} did not start")
        time.sleep(0.1)
    yield {"DISPLAY": f":{n}"}
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def app_env(xvfb, tmp_path, deejai_home) -> dict[str, str]:
    env = dict(os.environ)
    env.update(xvfb)
    env.update({
        "KIVY_NO_ARGS": "1",
        "KIVY_HOME": str(tmp_path / "kivy-home"),
        "KIVY_NO_CONSOLELOG": "1",
        "KIVY_NO_FILELOG": "1",
        "SDL_AUDIODRIVER": "dummy",
        "DEEJAI_HOME": str(deejai_home),
        "HOME": str(tmp_path / "home"),  # the app shows ~/Music, not this machine's folders
        "DEEJAI_WORKERS": "2",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.pop("DEEJAI_NO_DAEMON", None)
    return env


@pytest.fixture
def library_dir(tmp_path) -> Path:
    from tests.audiogen import make_library

    root = tmp_path / "home" / "Music"  # ~/Music for the app (HOME is tmp_path/home there)
    make_library(root, n=10, seconds=4.0)
    return root


def _drive(env: dict, tmp_path: Path, *args: str, publish: bool = True) -> dict:
    out = tmp_path / "driver.json"
    shots = tmp_path / "shots"
    shots.mkdir(exist_ok=True)
    cmd = [sys.executable, str(Path(__file__)), "--out", str(out), "--shots", str(shots), *args]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=DRIVER_TIMEOUT_S)
    if not out.exists():
        pytest.fail(f"the driver wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    assert result.get("error") is None, result["error"] + "\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    if publish:
        _publish(shots)
    return result


def _publish(shots: Path) -> None:
    """Copy the screenshots to ``$DEEJAI_KIVY_SCREENSHOTS`` (e.g. docs/img) when asked."""
    target = os.environ.get("DEEJAI_KIVY_SCREENSHOTS")
    if not target:
        return
    dest = Path(target) if Path(target).is_absolute() else ROOT / target
    dest.mkdir(parents=True, exist_ok=True)
    for png in shots.glob("*.png"):
        shutil.copy2(png, dest / f"kivy-{png.name}")


def _check_png(path: str, size: str = WINDOW) -> None:
    """A real PNG of the window's size that is not blank (stdlib only: header and pixels)."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == tuple(int(v) for v in size.split("x")), (path, width, height)
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 40, f"{path} is (nearly) blank"


def _check_full_flow(result: dict, engine: Any, library: Path, tmp_path: Path) -> None:
    assert "library is empty" in result["empty_message"], result["empty_message"]
    scan = result["scan"]
    assert scan["summary"]["state"] == "finished"
    assert scan["summary"]["summary"]["added"] == 10
    assert scan["tracks"] == "10" and scan["errors"] == "0"
    texts = [t for _, _, t in scan["progress"]]
    assert any("/ 10 files" in t for t in texts), texts
    assert any(value > 0 for value, _, _ in scan["progress"]), "the bar never moved"

    join = result["join"]
    params = join["params"]
    assert params["n"] == 3 and params["noise"] == pytest.approx(0.3)
    assert isinstance(params["seed"], int)
    titles = [r["label"].split(" - ", 1)[1] for r in join["rows"]]
    via = result["via"]
    assert via["picked"] == via["first"] and via["picked"].startswith("Beat ")
    assert titles[0] == "Chord 0" and titles[-1] == "Noise 6" and via["picked"] in titles
    expected = engine.join(**params)
    assert join["shown_ids"] == [e["id"] for e in expected["entries"]]
    assert len(join["shown_ids"]) == 3 + 3 + 2 + 1  # waypoints + 3 between each pair
    fractions = [r["fraction"] for r in join["rows"]]
    assert fractions[0] == 0 and max(fractions) == pytest.approx(1.0)

    assert "matches" in result["ambiguous_message"] and "Artist 1" in result["ambiguous_message"]

    radio = result["radio"]
    assert radio["params"]["n"] == 6 and radio["params"]["lookback"] == 2
    assert radio["params"]["noise"] == pytest.approx(0.2)
    expected = engine.radio(**radio["params"])
    assert radio["shown_ids"] == [e["id"] for e in expected["entries"]]
    assert radio["rows"][0]["label"].endswith("Bass 4")

    saved = Path(result["saved_path"])
    text = saved.read_text(encoding="utf-8")
    assert text.startswith("#EXTM3U")
    by_id = {e["id"]: e["path"] for e in expected["entries"]}
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [str((saved.parent / p).resolve()) for p in listed] == [
        str(Path(by_id[i]).resolve()) for i in radio["shown_ids"]]

    # playback on SDL's null audio driver (SDL_AUDIODRIVER=dummy): it plays, in silence, and
    # the screen says so (tests/test_kivy_player.py: no device is never called "playing")
    assert result["now_playing"].startswith("playing 1/6 (silent: SDL's 'dummy' audio driver")
    assert result["now_playing"].endswith("Bass 4")
    assert (result["playing_index"], result["after_skip_index"]) == (0, 1)

    assert result["after_escape"] == "library"
    for shot in result["screenshots"]:
        _check_png(shot)
    names = {Path(s).stem for s in result["screenshots"]}
    assert {"library", "join", "radio", "playlist"} <= names


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_app_through_a_daemon_it_starts(app_env, tmp_path, library_dir):
    """Scan, join, radio, export through ``deejai serve`` the app starts and stops itself."""
    from deejai.engine.rpc import Client
    from deejai.engine.service import Engine

    sock = str(tmp_path / "home" / "run" / "deejai.sock")  # shown as ~/run/deejai.sock
    Path(sock).parent.mkdir(parents=True, exist_ok=True)
    assert Client.connect_or_none(sock, timeout=0.5) is None
    result = _drive(app_env, tmp_path, "--scenario", "full", "--lib", "~/Music", "--socket", sock)
    assert result["mode"] == "daemon"
    pid = result["started_daemon_pid"]
    assert pid, "the app did not start a daemon"
    assert _wait_gone(pid), "the daemon the app started outlived the app"
    with Engine() as engine:
        _check_full_flow(result, engine, library_dir, tmp_path)


def test_app_embedded(app_env, tmp_path, library_dir):
    """The same flow with ``--embedded``: no daemon, the Engine runs in the app."""
    from deejai.engine.service import Engine

    result = _drive(app_env, tmp_path, "--scenario", "full", "--embedded", "--lib", "~/Music",
                    publish=False)  # the docs show the daemon run
    assert result["mode"] == "embedded"
    assert result["started_daemon_pid"] is None
    with Engine() as engine:
        _check_full_flow(result, engine, library_dir, tmp_path)


def _start_daemon(env: dict, sock: str, log: Path) -> subprocess.Popen:
    from deejai.engine.rpc import Client

    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "deejai.ui_cli.main", "serve",
                                 "--socket", sock], env=env, stdout=fh, stderr=fh,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client = Client.connect_or_none(sock, timeout=0.5)
        if client is not None:
            client.close()
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the daemon did not start: {log.read_text()[-2000:]}")


def test_daemon_killed_mid_use(app_env, tmp_path, library_dir):
    """The daemon dies under the app: the app says so, then works again once one returns."""
    from deejai.engine.rpc import Client

    sock = str(tmp_path / "home" / "run" / "deejai.sock")  # shown as ~/run/deejai.sock
    Path(sock).parent.mkdir(parents=True, exist_ok=True)
    daemon = _start_daemon(app_env, sock, tmp_path / "daemon1.log")
    restarted = None
    try:
        with Client.connect(sock) as client:
            job = client.scan(paths=[str(library_dir)])["job"]
            deadline = time.monotonic() + 180
            while client.scan_status(job=job)["state"] == "running":
                assert time.monotonic() < deadline, "scan did not finish"
                time.sleep(0.3)
        result = _drive(app_env, tmp_path, "--scenario", "kill", "--socket", sock,
                        "--daemon-pid", str(daemon.pid))
        restarted = result.get("restarted_pid")
        assert daemon.wait(10) == -signal.SIGKILL
        assert len(result["before_kill"]["shown_ids"]) == 5
        assert "daemon" in result["error_message"], result["error_message"]
        assert result["error_is_red"] is True
        assert result["connected_after_kill"] is False
        assert result["connection_after_kill"] == "daemon lost"
        assert result["connected_after_restart"] is True
        assert result["message_after_restart"] == "", result["message_after_restart"]
        assert result["connection_after_restart"].startswith("daemon at ")
        with Client.connect(sock) as client:
            expected = client.radio(**result["after_restart"]["params"])
        assert result["after_restart"]["shown_ids"] == [e["id"] for e in expected["entries"]]
        for shot in result["screenshots"]:
            _check_png(shot)
    finally:
        for pid in (daemon.pid, restarted):
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if restarted:
            _wait_gone(restarted)


#: Tracks of the tour's library: more than a playlist screen shows at once.
TOUR_TRACKS = 24


@pytest.fixture(scope="module")
def tour_library(tmp_path_factory) -> tuple[Path, Path]:
    """A generated library of TOUR_TRACKS tracks, scanned once for the module by the real
    engine: (its DEEJAI_HOME, its music folder)."""
    from deejai.engine.service import Engine
    from tests.audiogen import make_library

    home = tmp_path_factory.mktemp("tour-home")
    root = tmp_path_factory.mktemp("tour-music")
    make_library(root, n=TOUR_TRACKS, seconds=3.0)
    old = os.environ.get("DEEJAI_HOME")
    os.environ["DEEJAI_HOME"] = str(home)
    try:
        with Engine() as engine:
            state = engine.wait_scan(engine.scan(paths=[str(root)], workers=1)["job"],
                                     timeout=300)
            assert state["state"] == "finished", state
    finally:
        if old is None:
            os.environ.pop("DEEJAI_HOME", None)
        else:
            os.environ["DEEJAI_HOME"] = old
    return home, root


@pytest.fixture
def scanned_library(app_env, tour_library, deejai_home) -> Path:
    """This test's DEEJAI_HOME holding a copy of the scanned tour library."""
    home, root = tour_library
    shutil.copytree(home / "data", deejai_home / "data", dirs_exist_ok=True)
    return root


@pytest.mark.parametrize("size,prefix", [("480x800", "phone-"), ("1024x700", "desktop-")])
def test_every_screen_and_the_map_with_real_taps(app_env, tmp_path, scanned_library, size,
                                                 prefix):
    """Every screen at a phone and a desktop size; on the map, two real taps make the same
    playlist as `deejai playlist` for the same tracks, a pinch zooms, a drag pans, and a radio
    from a dot draws the walk the engine makes."""
    from deejai.engine.service import Engine

    result = _drive(app_env, tmp_path, "--scenario", "tour", "--embedded", "--size", size,
                    "--prefix", prefix)
    join = result["map_join"]
    a, b = join["ends"]
    assert join["selection"] == [a, b]
    assert join["params"]["waypoints"] == [a, b] and join["params"]["n"] == 4
    assert join["path"] == join["playlist_ids"]  # the path drawn is the playlist shown
    assert join["path"][0] == a and join["path"][-1] == b and len(join["path"]) == 6
    cli = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "playlist", "--from",
                          f"#{a}", "--to", f"#{b}", "-n", "4", "--format", "json"],
                         env=dict(app_env, DEEJAI_NO_DAEMON="1"), capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert [e["id"] for e in json.loads(cli.stdout)["entries"]] == join["path"]
    assert "6 tracks" in join["info"]

    assert result["pinch"]["after"] > 1.5 * result["pinch"]["before"]
    assert result["drag"]["after"] != result["drag"]["before"]

    radio = result["map_radio"]
    assert radio["params"]["seeds"] == [radio["seed"]] and radio["params"]["n"] == 8
    with Engine() as engine:
        expected = engine.radio(**radio["params"])
    assert radio["path"] == [e["id"] for e in expected["entries"]]
    assert "matches" in result["stale"]["error"] and result["stale"]["after"] == ""
    make = result["make_button"]
    x, y, w, h = make["window"]
    width, height = make["window_size"]
    assert make["suggestions"] > 0 and 0 <= x and x + w <= width and 0 <= y and y + h <= height
    long = result["long_playlist"]
    assert long["rows"] == TOUR_TRACKS - 4 and long["more"].endswith("more below: scroll"), long
    assert long["more_at_bottom"] == ""
    names = {Path(s).stem for s in result["screenshots"]}
    assert {f"{prefix}{n}" for n in ("library", "map", "map-path", "map-zoomed", "playlist",
                                     "join", "radio", "map-radio")} <= names
    for shot in result["screenshots"]:
        _check_png(shot, size)


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool (apt-get install xdotool)")
def test_app_starts_quietly_and_escape_on_the_library_closes_it(app_env, tmp_path):
    """`deejai-kivy` as a person starts it: nothing on the console (Kivy's log goes through
    Python's logging once, its harmless warnings only with --verbose), and Escape on the
    Library screen closes the window; with --verbose the log lines appear, each once."""
    env = dict(app_env)
    env.pop("KIVY_NO_CONSOLELOG", None)
    env.pop("KIVY_NO_FILELOG", None)
    (tmp_path / "home").mkdir(exist_ok=True)

    def run(*extra: str) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "-m", "deejai.ui_kivy.app", "--embedded",
                                 "--size", "480x800", *extra], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            wins: list[str] = []
            while not wins and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.3)
                wins = subprocess.run(["xdotool", "search", "--pid", str(proc.pid)], env=env,
                                      capture_output=True, text=True).stdout.split()
            assert wins, "the app's window never appeared"
            time.sleep(1.5)
            subprocess.run(["xdotool", "windowfocus", "--sync", wins[0]], env=env, timeout=10)
            subprocess.run(["xdotool", "key", "--window", wins[0], "Escape"], env=env, timeout=10)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, out

    rc, out = run()
    assert rc == 0 and out.strip() == "", out
    rc, out = run("--verbose")
    lines = out.strip().splitlines()
    assert rc == 0 and any("Kivy: v" in line for line in lines), out
    assert len(lines) == len(set(lines)), "a log line appears twice"
    assert "Traceback" not in out
