"""Frame time of the Kivy map (``deejai.ui_kivy.mapview.MapView``) with many dots.

Prints figures, asserts nothing. A window of ``--size`` (default 480x800, a phone) shows only
the map with ``--dots`` points (default 20,000) in 12 colour groups and a 20-track path; for
``--frames`` frames each frame pans and zooms it as a pinch does (two matrix changes and the
overlay; the dots are resized when the gesture ends), then the same number of frames pans
only. Frame time is the interval between two frames of Kivy's clock with the frame rate
unlimited (``maxfps = 0``), so it includes drawing (a still map is not redrawn: its frames show Kivy's own cost): under Xvfb that is Mesa's software
renderer (llvmpipe) on the CPU, slower than any phone's GPU. Also printed: the time to
rebuild the dots (after a zoom gesture) and to redraw the overlay.

Needs Kivy and an X display; without ``DISPLAY`` it starts ``Xvfb`` itself.

Usage::

    python benchmarks/map_frames.py
    python benchmarks/map_frames.py --dots 20000 --size 480x800 --frames 300
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np


def _start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    exe = shutil.which("Xvfb")
    if exe is None:
        raise SystemExit("no DISPLAY and no Xvfb: run under X, or apt-get install xvfb")
    for n in range(150, 250):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten",
                                     "tcp", "-noreset"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("Xvfb did not start")
                time.sleep(0.1)
            os.environ["DISPLAY"] = f":{n}"
            return proc
    raise SystemExit("no free X display number")


def points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` map points in 12 clusters inside [-1, 1]², and their group."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.7, 0.7, (12, 2))
    groups = rng.integers(0, 12, n)
    xy = np.clip(centres[groups] + 0.12 * rng.standard_normal((n, 2)), -1, 1)
    return xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32), groups


def stats(name: str, dts: list[float]) -> None:
    ms = np.asarray(dts) * 1000.0
    print(f"  {name:<26} frames {len(ms):4d}   median {np.median(ms):6.1f} ms   "
          f"p95 {np.percentile(ms, 95):6.1f} ms   max {ms.max():6.1f} ms   "
          f"({1000.0 / np.median(ms):5.1f} fps)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dots", type=int, default=20_000)
    ap.add_argument("--size", default="480x800")
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args(argv)
    xvfb = _start_xvfb()
    try:
        run(args)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)


def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
    width, height = (int(v) for v in args.size.split("x"))
    from kivy.config import Config

    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    Config.set("graphics", "maxfps", "0")
    Config.set("graphics", "vsync", "0")
    from kivy.app import App
    from kivy.clock import Clock
    from kivy.core.window import Window

    from deejai.ui_kivy.mapview import PALETTE, MapView

    x, y, groups = points(args.dots)
    ids = np.arange(1, args.dots + 1)
    path = [int(i) for i in ids[:: max(1, args.dots // 20)][:20]]
    result: dict[str, object] = {}

    class Bench(App):
        def build(self) -> MapView:
            self.view = MapView()
            return self.view

        def on_start(self) -> None:
            Clock.schedule_once(self.setup, 0.5)

        def setup(self, _dt: float) -> None:
            view = self.view
            t = time.perf_counter()
            view.set_points(ids, x, y, groups, PALETTE)
            result["set_points"] = time.perf_counter() - t
            view.selection = path[:2]
            view.path = path
            t = time.perf_counter()
            view._build_dots()
            result["rebuild"] = time.perf_counter() - t
            t = time.perf_counter()
            view._draw_overlay()
            result["overlay"] = time.perf_counter() - t
            self.frames: list[float] = []
            self.phase = "warm"
            self.count = 0
            self.last = time.perf_counter()
            Clock.schedule_interval(self.frame, 0)

        def frame(self, _dt: float) -> bool | None:
            now = time.perf_counter()
            dt, self.last = now - self.last, now
            view = self.view
            self.count += 1
            if self.phase == "warm":
                if self.count >= 20:
                    self.phase, self.count, self.frames = "pinch", 0, []
                    view._gesture = True
                return None
            self.frames.append(dt)
            cx, cy = view.center
            swing = 1.0 if (self.count // 30) % 2 == 0 else -1.0  # back and forth, no drift
            if self.phase == "pinch":
                view.zoom_at(1.02 if swing > 0 else 1 / 1.02, cx, cy)
                view.pan(1.5 * swing, -1.0 * swing)
                if self.count >= args.frames:
                    result["pinch"] = self.frames[1:]
                    view._gesture = False
                    view._apply_transform()
                    self.phase, self.count, self.frames = "pan", 0, []
            elif self.phase == "pan":
                view.pan(3.0 * swing, 2.0 * swing)
                if self.count >= args.frames:
                    result["pan"] = self.frames[1:]
                    self.phase, self.count, self.frames = "still", 0, []
            elif self.phase == "still":  # nothing changes: what a frame costs Kivy itself
                if self.count >= args.frames:
                    result["still"] = self.frames[1:]
                    self.stop()
                    return False
            return None

    Bench().run()
    print(f"map of {args.dots:,} dots in a {width}x{height} window "
          f"(GL: {Window.__class__.__name__}; Xvfb + Mesa software rendering when under Xvfb)")
    print(f"  set_points {1000 * result['set_points']:.0f} ms, dot rebuild after a zoom "
          f"{1000 * result['rebuild']:.0f} ms, overlay redraw {1000 * result['overlay']:.1f} ms")
    stats("pinch (zoom + pan) frames", result["pinch"])  # type: ignore[arg-type]
    stats("pan frames", result["pan"])  # type: ignore[arg-type]
    stats("still frames (no redraw)", result["still"])  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
