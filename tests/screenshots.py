"""Screenshots of every Kivy screen, the map with a path, at phone and desktop sizes, from a
scanned library: the documentation's pictures (``docs/img/kivy-*.png``).

Runs the same driver as ``tests/test_kivy_app.py`` (its ``tour`` scenario: real touches on
the map, the playlists checked by that test) in a real window on Xvfb, on a *copy* of the
library at ``--home`` (a DEEJAI_HOME that was scanned, e.g. the real-music corpus), and draws
the same map with the CLI (``deejai map``)::

    DEEJAI_HOME=~/corpus-home deejai scan /path/to/corpus
    python tests/screenshots.py --home ~/corpus-home --music /path/to/corpus --out docs/img

Needs Kivy, matplotlib and the Xvfb binary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (("480x800", "phone"), ("1024x700", "desktop"))


def _xvfb() -> tuple[subprocess.Popen, str]:
    for n in range(300, 400):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x1024x24", "-nolisten",
                                     "tcp", "-noreset"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while not Path(f"/tmp/.X11-unix/X{n}").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("Xvfb did not start")
                time.sleep(0.1)
            return proc, f":{n}"
    raise SystemExit("no free X display")


def _move_library(db: Path, old_root: Path, new_root: Path) -> None:
    """Point the copied library's paths at ``new_root``, a symbolic link to ``old_root``."""
    import sqlite3

    new_root.symlink_to(old_root, target_is_directory=True)
    old, new = str(old_root), str(new_root)
    con = sqlite3.connect(db)
    try:
        with con:
            con.execute("UPDATE tracks SET path = ? || substr(path, ?) WHERE path LIKE ? || '%'",
                        (new, len(old) + 1, old))
            con.execute("UPDATE scans SET roots = replace(roots, ?, ?)", (old, new))
            con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="a scanned DEEJAI_HOME (copied, not changed)")
    ap.add_argument("--out", required=True, help="where the PNG files go")
    ap.add_argument("--music", default=None,
                    help="the folder the library was scanned from: in the copy its tracks are "
                         "moved to ~/Music (a link to it), so no path of this machine shows")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    xvfb, display = _xvfb()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            home = tmp_path / "deejai-home"
            shutil.copytree(Path(args.home).expanduser() / "data", home / "data")
            fake_home = tmp_path / "home"
            fake_home.mkdir()
            if args.music:
                _move_library(home / "data" / "library.sqlite", Path(args.music).resolve(),
                              fake_home / "Music")
            else:
                (fake_home / "Music").mkdir()
            env = dict(os.environ, DISPLAY=display, DEEJAI_HOME=str(home), HOME=str(fake_home),
                       KIVY_NO_ARGS="1", KIVY_HOME=str(tmp_path / "kivy"), SDL_AUDIODRIVER="dummy",
                       KIVY_NO_CONSOLELOG="1", PYTHONPATH=str(ROOT) + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
            for size, name in SIZES:
                result = tmp_path / f"{name}.json"
                cmd = [sys.executable, str(ROOT / "tests" / "test_kivy_app.py"), "--scenario",
                       "tour", "--embedded", "--size", size, "--prefix", f"kivy-{name}-",
                       "--out", str(result), "--shots", str(out)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
                report = json.loads(result.read_text()) if result.exists() else {}
                if proc.returncode != 0 or report.get("error"):
                    print(report.get("error") or proc.stderr[-3000:] or proc.stdout[-3000:]
                          or f"the driver exited {proc.returncode}", file=sys.stderr)
                    return 1
                for shot in report["screenshots"]:
                    print(shot)
            # the CLI's picture of the same map, with a join between the tour's two ends
            a, b = json.loads((tmp_path / "phone.json").read_text())["map_join"]["ends"]
            res = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "--no-daemon",
                                  "playlist", "--from", f"#{a}", "--to", f"#{b}", "-n", "8"],
                                 env=env, capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return 1
            png = out / "map-cli.png"
            res = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "--no-daemon",
                                  "map", "-o", str(png), "--size", "1100x750"], env=env,
                                 capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return 1
            print(png)
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
