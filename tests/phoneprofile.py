"""The phone profile: exactly the Python packages a phone build of deejai has.

python-for-android (and kivy-ios) build numpy, PyAV, pyjnius, Kivy and SQLite from recipes and
install pure-Python packages with pip; nothing else exists in the APK. The engine must run
there — scan, analyse, index, playlists — without soundfile, soxr, librosa, scipy, numba,
faiss, rich, threadpoolctl, audioread or click (the CLI).

Two ways to get that environment on a desktop:

* **a real virtualenv** (CI, ``.ci/run``): ``pip install --no-deps .`` plus
  :data:`PHONE_REQUIREMENTS`, each with ``--no-deps``; its interpreter is given to the tests as
  ``DEEJAI_PHONE_PYTHON``.
* **a site folder of links** (every test run, :func:`site_dir`): the distributions of
  :data:`PHONE_REQUIREMENTS` (plus Kivy for the app) linked from this interpreter's
  site-packages, and ``deejai``'s folders; Python started with ``-S`` sees only those and the
  standard library. Whatever is not linked cannot be imported, exactly as on a phone.

``ai-edge-litert`` stands in for the Java/Objective-C TFLite interpreter of a phone; the
engine talks to both through the same backend interface (``engine/model.py``).
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The phone's packages (``pip`` names): numpy, mutagen, sqlite-utils, pluggy, platformdirs,
#: PyAV, LiteRT standing in for the phone's Java/Objective-C interpreter, and msgspec (the
#: engine's settings schema and method parameters; python-for-android has a recipe for it).
PHONE_PACKAGES = ("numpy", "mutagen", "sqlite-utils", "pluggy", "platformdirs", "ai-edge-litert",
                  "av", "msgspec")

#: What those import at their top (pure Python, which python-for-android installs with pip):
#: ``sqlite_utils/db.py`` imports sqlite_fts4 and ``sqlite_utils/{utils,hookspecs}.py`` import
#: click and dateutil. deejai itself never imports click on the phone's paths (the tests check
#: who imported it).
IMPORT_DEPENDENCIES = ("sqlite-fts4", "click", "python-dateutil")

#: Everything ``pip install --no-deps`` puts into the phone profile besides deejai.
PHONE_REQUIREMENTS = PHONE_PACKAGES + IMPORT_DEPENDENCIES

#: Kivy and what its python-for-android recipe brings along, for the app under Xvfb.
KIVY_PACKAGES = ("kivy", "filetype")

#: Desktop packages that must not be imported on the phone's paths (absent there).
ABSENT = ("soundfile", "soxr", "librosa", "scipy", "numba", "llvmlite", "faiss", "rich",
          "threadpoolctl", "audioread", "resampy", "psutil", "tensorflow", "tflite_runtime",
          "pystray", "PIL", "mpd")


def _top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    """Top-level names a distribution installed into site-packages (packages, modules,
    ``*.libs`` folders of bundled shared libraries, its ``.dist-info``)."""
    names = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        names.add(parts[0])
    return names


def site_dir(target: Path, packages: tuple[str, ...] = PHONE_REQUIREMENTS) -> Path:
    """Fill ``target`` with links to ``packages`` (as this interpreter has them installed) and
    to deejai's source folders; returns ``target``.

    Raises
    ------
    importlib.metadata.PackageNotFoundError
        One of ``packages`` is not installed here.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in packages:
        dist = importlib.metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for entry in _top_level_entries(dist):
            src, dst = base / entry, target / entry
            if src.exists() and not dst.exists():
                dst.symlink_to(src, target_is_directory=src.is_dir())
    pkg = target / "deejai"
    pkg.mkdir(exist_ok=True)
    for sub in ("engine", "plugins", "ui_kivy", "models"):
        link = pkg / sub
        if not link.exists():
            link.symlink_to(ROOT / sub, target_is_directory=True)
    return target


def command(site: Path | None, *args: str, venv: bool = True) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``python *args`` in the phone profile.

    ``DEEJAI_PHONE_PYTHON`` (a real phone-profile venv) wins unless ``venv`` is False; else
    this interpreter with ``-S`` (no site-packages) and only ``site`` on the path.
    """
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONNOUSERSITE"] = "1"
    # nothing of this checkout on the path: deejai comes from the profile's own install
    env["PYTHONPATH"] = ""
    real = os.environ.get("DEEJAI_PHONE_PYTHON") if venv else None
    if real:
        return [real, *args], env
    if site is None:
        raise ValueError("a site folder is needed without DEEJAI_PHONE_PYTHON")
    env["PYTHONPATH"] = str(site)
    return [sys.executable, "-S", *args], env


def profile_name() -> str:
    """``"venv"`` with ``DEEJAI_PHONE_PYTHON``, else ``"site links"``."""
    return "venv" if os.environ.get("DEEJAI_PHONE_PYTHON") else "site links"
