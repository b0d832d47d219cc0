"""Drive the Kivy app as a phone runs it: ``python tests/phone_app.py --lib DIR --out r.json --shots DIR``.

Run inside the phone profile (``tests/phoneprofile.py``: the phone's packages plus Kivy) in a
480x800 window, with the engine embedded and the decisions a phone build takes
(``deejai.ui_kivy.platform.run_plan`` for Android, applied to this desktop window: embedded
engine, no daemon, the NumPy index, analysis in threads). The flow: the Library screen scans
``DIR``, then the Radio screen makes a playlist from a track picked by typing. It writes what
the screens showed, what the engine ran on, and two screenshots.

Uses only the standard library, deejai and Kivy: it runs where pytest is not installed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

WINDOW = "480x800"


def _wait(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> tuple:
    return ("wait", pred, what, timeout)


def _run_steps(app: Any, steps: Iterator[Any], out: dict, out_path: Path) -> None:
    """Advance ``steps`` from Kivy's clock (``("wait", pred, what, timeout)`` or seconds)."""
    from kivy.clock import Clock

    state: dict[str, Any] = {"wait": None, "until": 0.0}

    def finish(error: str | None) -> None:
        out["error"] = error
        out_path.write_text(json.dumps(out, indent=1, default=str))
        event.cancel()
        app.stop()

    def tick(_dt: float) -> None:
        try:
            now = time.monotonic()
            if now < state["until"]:
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
                state["until"] = now + float(step)
            else:
                _, pred, what, timeout = step
                state["wait"] = (pred, what, now + timeout)
        except StopIteration:
            finish(None)
        except Exception:
            finish(traceback.format_exc())

    event = Clock.schedule_interval(tick, 0.05)


def _shot(app: Any, shots: Path, name: str, out: dict) -> None:
    path = shots / f"{name}.png"
    app.root.export_to_png(str(path))
    out.setdefault("screenshots", []).append(str(path))


def _flow(app: Any, opts: argparse.Namespace, out: dict) -> Iterator[Any]:
    shots = Path(opts.shots)
    library = app.root.ids.library
    yield _wait(lambda: app.connected, "the embedded engine", 90)
    out["connection"] = app.connection
    engine = app.backend.engine()
    out["engine"] = {"class": type(engine).__name__, "index_backend": engine.index_backend,
                     "scan_executor": engine.scan_executor}
    from deejai.ui_kivy.viewmodel import contract_home

    library.ids.folders.text = contract_home(opts.lib)  # "~/Music", as a person types it
    threads_seen: set[str] = set()

    def scanning_done() -> bool:
        threads_seen.update(t.name for t in threading.enumerate())
        out.setdefault("children_during_scan", 0)
        out["children_during_scan"] = max(out["children_during_scan"],
                                          len(multiprocessing.active_children()))
        return not library.scanning and bool(library.last_summary)

    library.ids.scan_button.dispatch("on_press")
    yield _wait(lambda: library.scanning, "the scan to start", 10)
    yield _wait(scanning_done, "scan.finished", 300)
    yield _wait(lambda: library.tracks not in ("-", "0"), "the track count", 30)
    yield 0.3
    out["scan"] = {"summary": dict(library.last_summary), "tracks": library.tracks,
                   "errors": library.errors}
    out["analysis_threads"] = sorted(n for n in threads_seen if n.startswith("deejai-analyse"))
    _shot(app, shots, "phone-profile-library", out)

    app.go("radio")
    screen = app.root.ids.radio
    yield 0.5
    picker = screen.ids.seed_track
    picker.ids.field.text = "chord"
    yield _wait(lambda: len(picker.suggestions) > 0, "suggestions for 'chord'", 60)
    first = picker.suggestions[0]
    buttons = [b for b in picker.ids.suggestions.children if b.track.get("id") == first["id"]]
    buttons[0].trigger_action(0)
    yield _wait(lambda: picker.picked is not None, "the seed picked", 10)
    screen.ids.n_slider.ids.slider.value = 5
    playlist_screen = app.root.ids.playlist
    before = playlist_screen.playlist
    screen.ids.make_button.dispatch("on_press")
    yield _wait(lambda: playlist_screen.playlist and playlist_screen.playlist is not before
                and playlist_screen.shown_ids(), "the radio playlist", 120)
    yield 0.6
    out["seed"] = first
    out["radio"] = {"params": playlist_screen.playlist.get("params"),
                    "shown_ids": playlist_screen.shown_ids(),
                    "rows": [dict(r) for r in playlist_screen.ids.rows.data]}
    _shot(app, shots, "phone-profile-playlist", out)

    from deejai.engine.decode import resample

    out["resampler"] = resample.resampler_name()
    std = set(getattr(sys, "stdlib_module_names", ()))
    out["third_party"] = sorted(n for n in sys.modules
                                if "." not in n and not n.startswith("_") and n not in std)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shots", required=True)
    opts = parser.parse_args(argv)
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from deejai.ui_kivy import app as app_module
    from deejai.ui_kivy import platform as plat

    # the decisions of a phone build, on this desktop window (its folders stay the test's)
    phone = plat.run_plan(platform="android")
    real_run_plan = plat.run_plan

    def phone_plan(**kwargs: Any) -> plat.RunPlan:
        here = real_run_plan(**kwargs)
        return dataclasses.replace(phone, platform=here.platform, music_dir=opts.lib)

    plat.run_plan = phone_plan
    app = app_module.build_app(app_module.parse_args(["--size", WINDOW]))
    out: dict[str, Any] = {"plan": dataclasses.asdict(app.plan), "no_site": bool(sys.flags.no_site)}
    from kivy.clock import Clock
    from kivy.core.window import Window

    out["window"] = list(Window.size)
    Clock.schedule_once(lambda dt: _run_steps(app, _flow(app, opts, out), out, Path(opts.out)), 0.5)
    app.run()
    return 0 if out.get("error") is None and "error" in out else 1


if __name__ == "__main__":
    sys.exit(main())
