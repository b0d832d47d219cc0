"""Run the engine the way the phone app does, inside the phone profile (``tests/phoneprofile.py``).

``python tests/phone_scan.py --library DIR --out result.json`` (with the phone profile's
interpreter and ``DEEJAI_HOME`` set) scans ``DIR`` with the engine the app embeds
(``build_engine(index_backend="numpy", scan_executor="thread")``) — the phone's choices: the NumPy
index, analysis in threads (an app cannot start Python worker processes), the NumPy resampler
because soxr is absent — makes a radio and a join playlist, exports it as M3U8, and writes what
happened to ``result.json``: which modules it imported and who imported them, which imports
failed, the decoder and resampler in use, the scan summary and the playlists.

Uses nothing but the standard library and deejai (no pytest, no test helpers): it runs where
only the phone's packages are installed.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.abc
import json
import os
import pkgutil
import sys
import time
import traceback
from typing import Any


class ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every first import of a top-level module (and which module asked for it)
    without changing what is found."""

    def __init__(self) -> None:
        self.asked: dict[str, set[str]] = {}

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if "." not in name and name not in sys.modules:
            self.asked.setdefault(name, set()).add(_importer())
        return None

    def report(self) -> dict[str, Any]:
        std = set(getattr(sys, "stdlib_module_names", ()))
        loaded = {n for n in sys.modules if "." not in n and not n.startswith("_")}
        third = sorted(n for n in loaded if n not in std)
        failed = {n: sorted(who) for n, who in self.asked.items()
                  if n not in sys.modules and n not in std}
        importers = {n: sorted(who) for n, who in self.asked.items() if n in third}
        return {"third_party": third, "failed": failed, "importers": importers}


def _importer() -> str:
    """The module whose code runs the import statement (outside importlib's machinery)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "?")
        if not name.startswith(("importlib", "_frozen_importlib")) and name != __name__:
            return name
        frame = frame.f_back
    return "?"


def _import_all(package: str) -> dict[str, str]:
    """Import ``package`` and every module below it; ``{module: error}`` for those that fail."""
    failures: dict[str, str] = {}
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - reported, the test decides
            failures[info.name] = f"{type(exc).__name__}: {exc}"
    return failures


def run(library: str, out: dict[str, Any], recorder: ImportRecorder) -> None:
    """The phone's paths first (what they import is recorded on its own), then every module."""
    import deejai.engine  # noqa: F401  (must not fail on a missing optional package)
    from deejai.engine import decode
    from deejai.engine.decode import resample
    from deejai.plugins.manager import build_engine

    out["resampler"] = resample.resampler_name()
    out["decoders"] = decode.available_backends()
    # as the app builds its embedded engine (ui_kivy/backend.py): with the plugins' exporters
    engine = build_engine(index_backend="numpy", scan_executor="thread")
    try:
        t0 = time.perf_counter()
        job = engine.scan([library])["job"]
        result = engine.wait_scan(job, timeout=600)
        out["scan_seconds"] = round(time.perf_counter() - t0, 3)
        out["scan"] = {k: result.get(k) for k in ("state", "done", "total", "errors", "summary",
                                                  "error")}
        status = engine.status()
        out["index"] = status.get("index")
        out["tracks"] = status.get("tracks")
        ids = sorted(t["id"] for t in engine.tracks(limit=None))
        out["track_ids"] = ids
        if len(ids) >= 2:
            radio = engine.radio([ids[0]], n=min(5, len(ids)), seed=1)
            join = engine.join([ids[0], ids[-1]], n=min(3, len(ids) - 2), seed=1)
            out["radio"] = [e["id"] for e in radio["entries"]]
            out["join"] = [e["id"] for e in join["entries"]]
            out["export"] = engine.export(radio, format="m3u8")["content"]
            if hasattr(engine, "map"):  # the app's Map screen: PCA where openTSNE is absent
                points = engine.map()
                out["map"] = {"method": points["method"], "count": points["count"]}
    finally:
        engine.close()
    # which decoder read the files: open one the way analysis does

    for dirpath, _, files in os.walk(library):
        audio = [f for f in files if f.endswith((".mp3", ".flac", ".ogg", ".wav", ".m4a"))]
        if audio:
            with decode.open_source(os.path.join(dirpath, audio[0])) as s:
                out["decoder_used"] = s.info.decoder
            break
    out["path_imports"] = recorder.report()
    out["engine_import_failures"] = _import_all("deejai.engine")
    out["plugin_import_failures"] = _import_all("deejai.plugins")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args(argv)
    recorder = ImportRecorder()
    sys.meta_path.insert(0, recorder)
    out: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                           "no_site": bool(sys.flags.no_site)}
    try:
        run(opts.library, out, recorder)
        out["error"] = None
    except BaseException:  # noqa: BLE001 - reported to the test
        out["error"] = traceback.format_exc()
    out["imports"] = recorder.report()
    with open(opts.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, default=str)
    return 0 if out["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
