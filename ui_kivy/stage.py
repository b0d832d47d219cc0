"""Lay out the source folder buildozer packs into an APK: ``python -m deejai.ui_kivy.stage DIR``.

buildozer packs one folder that holds ``main.py``; deejai's packages live under the
``deejai`` import name, mapped from separate top-level folders in the repository. This helper
copies the installed ``deejai.engine``, ``deejai.plugins``, ``deejai.ui_kivy`` (with the Java
helper in ``ui_kivy/java``, which buildozer compiles into the APK) and the default model
(``deejai.models/<model>/``: ``card.json``, ``LICENSE`` and every ``.tflite`` variant the card
names) into ``DIR/deejai/...``, writes ``DIR/main.py`` (which starts the app with the embedded engine),
and copies ``buildozer.spec`` beside it. Then ``cd DIR && buildozer android debug``
(``docs/mobile.md``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["stage", "PACKAGES", "MAIN_PY"]

#: Packages the app needs on a phone (the CLI, the tray and the conversion tool stay behind).
PACKAGES = ("engine", "plugins", "ui_kivy")

#: Files of a model folder that go into the APK (not the test-only ``golden.npz``).
MODEL_FILES = ("model.tflite", "card.json", "LICENSE")

MAIN_PY = '''"""python-for-android runs this file (written by deejai.ui_kivy.stage)."""
import sys

from deejai.ui_kivy.app import main

sys.exit(main({args!r}))
'''

#: The Java helper the Android decoder drives (buildozer.spec: ``android.add_src``).
JAVA_DIR = "java"

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "buildozer.spec")


def _package_dir(name: str) -> Path:
    import importlib

    module = importlib.import_module(f"deejai.{name}")
    return Path(module.__file__).resolve().parent


def stage(target: str | Path, *, models: Sequence[str] | None = None, debug: bool = False) -> Path:
    """Write the buildozer source folder ``target``; returns its ``main.py``.

    Parameters
    ----------
    target : path
        Folder to fill (created; the ``deejai`` folder inside it is replaced).
    models : sequence of str, optional
        Model folders (under ``deejai.models``) to include (default: the default model). Each
        gets :data:`MODEL_FILES` and every file its card's ``variants`` name (the phone picks a
        variant by measuring, like the desktop).
    debug : bool
        Start the app with ``--debug``: INFO log lines (decoder, interpreter, scan) in
        ``adb logcat``, for the first runs on a device.

    Raises
    ------
    FileNotFoundError
        When a model folder lacks one of :data:`MODEL_FILES`.
    """
    target = Path(target)
    pkg_root = target / "deejai"
    if pkg_root.exists():
        shutil.rmtree(pkg_root)
    pkg_root.mkdir(parents=True)
    for name in PACKAGES:
        shutil.copytree(_package_dir(name), pkg_root / name, ignore=_IGNORE)
    models_src = _package_dir("models")
    models_dst = pkg_root / "models"
    models_dst.mkdir()
    shutil.copy2(models_src / "__init__.py", models_dst / "__init__.py")
    if models is None:
        from deejai.models import DEFAULT_MODEL

        models = (DEFAULT_MODEL,)
    for model in models:
        (models_dst / model).mkdir()
        files = list(MODEL_FILES)
        try:
            variants = json.loads((models_src / model / "card.json").read_text()).get("variants")
        except (OSError, ValueError):
            variants = None
        files += [v["file"] for v in (variants or {}).values() if v.get("file") not in files]
        for fname in files:
            src = models_src / model / fname
            if not src.is_file():
                raise FileNotFoundError(f"{src}: missing from the model folder {model!r}")
            shutil.copy2(src, models_dst / model / fname)
    main_py = target / "main.py"
    args = ["--embedded"] + (["--debug"] if debug else [])
    main_py.write_text(MAIN_PY.format(args=args), encoding="utf-8")
    java = pkg_root / "ui_kivy" / JAVA_DIR
    if not any(java.rglob("*.java")):
        raise FileNotFoundError(f"{java}: the Java helper (org/deejai/*.java) is missing")
    shutil.copy2(Path(__file__).with_name("buildozer.spec"), target / "buildozer.spec")
    return main_py


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deejai.ui_kivy.stage", description=__doc__.split("\n")[0])
    parser.add_argument("target", help="folder to write (e.g. build/android)")
    parser.add_argument("--model", action="append", default=None, help="model folder to include")
    parser.add_argument("--debug", action="store_true",
                        help="start the app with --debug (INFO lines in adb logcat)")
    args = parser.parse_args(argv)
    main_py = stage(args.target, models=args.model or None, debug=args.debug)
    print(f"staged {main_py.parent}; now: cd {main_py.parent} && buildozer android debug")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
