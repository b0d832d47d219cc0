"""The package as a user installs it: one `deejai` namespace, a fast CLI, the model inside."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys, json\n"
        "from deejai.ui_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['ai_edge_litert', 'tflite_runtime', 'tensorflow', 'faiss', 'librosa', 'soxr',\n"
        "         'soundfile', 'kivy', 'pystray', 'sqlite_utils']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert "deejai scan" in out.stdout


def test_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "deejai.ui_cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for name in ("scan", "playlist", "radio", "status", "tracks", "analyse"):
        assert name in out.stdout


@pytest.mark.slow
def test_wheel_installs_only_the_deejai_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("deejai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"deejai", next(t for t in tops if t.endswith(".dist-info"))}
    for sub in ("engine", "plugins", "ui_cli", "ui_kivy", "models"):
        assert f"deejai/{sub}/__init__.py" in names
    # every sub-package of the source folders, not only the top ones (a non-editable install,
    # e.g. the phone profile's, once lacked deejai.engine.decode)
    for sub in ("engine", "plugins", "ui_cli", "ui_kivy", "models"):
        for init in (ROOT / sub).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"deejai/{rel}" in names, f"{rel} is missing from the wheel"
    assert "deejai/models/msd-musicnn/model.tflite" in names
    assert "deejai/models/msd-musicnn/card.json" in names
    assert "deejai/models/msd-musicnn/LICENSE" in names
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
