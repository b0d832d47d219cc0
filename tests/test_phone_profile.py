"""The phone profile: the engine with only the packages a phone build has (``tests/phoneprofile.py``).

The scan runs in a child interpreter that sees nothing but numpy, mutagen, sqlite-utils,
pluggy, platformdirs, ai-edge-litert, PyAV and the standard library (``DEEJAI_PHONE_PYTHON``,
a real venv made by ``.ci/run``, or this interpreter with ``-S`` and a folder of links); it
takes the phone's path (NumPy index, analysis in threads, the NumPy resampler since soxr is
absent). Its vectors must equal the desktop's scan of the same files (soxr, worker processes,
FAISS) to cosine >= 0.999 per track.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests import phoneprofile
from tests.audiogen import make_library, write_mp3

HERE = Path(__file__).resolve().parent
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def phone_site(tmp_path_factory) -> Path | None:
    if os.environ.get("DEEJAI_PHONE_PYTHON"):
        return None
    return phoneprofile.site_dir(tmp_path_factory.mktemp("phone-site"))


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music")
    make_library(root, n=8, seconds=8.0)
    # other sample rates: other resampling ratios (48 kHz: 1/3, 22.05 kHz: 320/441)
    write_mp3(root / "Rates" / "48k.mp3", seconds=7.0, kind="chirp", seed=11, sample_rate_hz=48000,
              tags={"artist": "Rates", "title": "Forty-eight"})
    write_mp3(root / "Rates" / "22k.mp3", seconds=7.0, kind="beat", seed=12, sample_rate_hz=22050,
              tags={"artist": "Rates", "title": "Twenty-two"})
    return root


def _vectors(home: Path) -> dict[str, np.ndarray]:
    from deejai.engine.library import Library
    from deejai.models import DEFAULT_MODEL

    lib = Library(home / "data" / "library.sqlite")
    try:
        ids, vecs = lib.vectors(DEFAULT_MODEL)
        return {lib.track(int(i))["path"]: v for i, v in zip(ids, vecs)}
    finally:
        lib.close()


def _phone_scan(site: Path | None, library: Path, home: Path, out: Path) -> dict:
    cmd, env = phoneprofile.command(site, str(HERE / "phone_scan.py"), "--library", str(library),
                                    "--out", str(out))
    env["DEEJAI_HOME"] = str(home)
    env.pop("DEEJAI_RESAMPLER", None)  # soxr is absent: the NumPy resampler by necessity
    env.pop("DEEJAI_DECODERS", None)
    proc = subprocess.run(cmd, env=env, cwd=str(out.parent), capture_output=True, text=True,
                          timeout=600)
    assert out.exists(), f"the phone scan wrote nothing (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["error"] is None, result["error"] + proc.stderr[-2000:]
    return result


@pytest.mark.slow
def test_phone_profile_scans_like_the_desktop(phone_site, library, tmp_path, monkeypatch):
    phone_home = tmp_path / "phone-home"
    result = _phone_scan(phone_site, library, phone_home, tmp_path / "phone.json")
    n = len(list(library.rglob("*.mp3")))

    # it ran in the phone profile, on the phone's path
    if phone_site is not None:
        assert result["no_site"]
    assert result["scan"]["state"] == "finished", result["scan"]
    assert result["scan"]["summary"]["added"] == n and result["scan"]["errors"] == 0
    assert result["resampler"] == "numpy" and result["decoder_used"] == "pyav"
    assert result["index"]["kind"] == "numpy" and result["index"]["ntotal"] == n
    assert len(result["radio"]) == 5 and len(result["join"]) == 5
    assert result["export"].startswith("#EXTM3U")
    assert result["map"] == {"method": "pca", "count": n}  # no openTSNE on a phone

    # what it imported: nothing outside the phone's packages, and click only for sqlite-utils
    loaded = set(result["imports"]["third_party"])
    assert not loaded & set(phoneprofile.ABSENT), loaded
    allowed = {"deejai", "numpy", "mutagen", "sqlite_utils", "pluggy", "platformdirs",
               "ai_edge_litert", "av", "msgspec", "sqlite_fts4", "click", "dateutil",
               "cython_runtime"}
    assert loaded <= allowed, loaded - allowed
    # click is there for sqlite-utils (it imports it at its top); the plugin manager checks the
    # plugins' register_commands with it when it is importable (deejai.plugins.manager)
    path_importers = result["path_imports"]["importers"]
    assert set(path_importers.get("click", [])) <= {"sqlite_utils.utils", "sqlite_utils.hookspecs",
                                                     "deejai.plugins.manager"}, path_importers
    # every engine module imports; the two backends of absent libraries say so
    assert result["engine_import_failures"] == {
        "deejai.engine.decode.audioread_backend": "ModuleNotFoundError: No module named 'audioread'",
        "deejai.engine.decode.soundfile_backend": "ModuleNotFoundError: No module named 'soundfile'",
    }

    # the desktop's scan of the same files (soxr, worker processes, FAISS)
    from deejai.engine.decode import resample
    from deejai.engine.service import Engine

    desktop_home = tmp_path / "desktop-home"
    monkeypatch.setenv("DEEJAI_HOME", str(desktop_home))
    monkeypatch.delenv("DEEJAI_RESAMPLER", raising=False)
    resample._soxr.cache_clear()
    assert resample.resampler_name() == "soxr"
    engine = Engine()
    try:
        job = engine.scan([str(library)], workers=2)["job"]
        assert engine.wait_scan(job, timeout=600)["state"] == "finished"
    finally:
        engine.close()

    phone, desktop = _vectors(phone_home), _vectors(desktop_home)
    assert set(phone) == set(desktop) and len(phone) == n
    cosines = {Path(p).name: float(phone[p] @ desktop[p] / np.linalg.norm(phone[p])
                                   / np.linalg.norm(desktop[p])) for p in phone}
    assert min(cosines.values()) >= MIN_COSINE, cosines
    # and not trivially: the tracks differ from one another
    a, b = list(phone.values())[:2]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) < 0.99


# --------------------------------------------------------------------------- the app


def test_phone_run_plan_analyses_in_threads():
    from deejai.ui_kivy import platform as plat

    for phone in ("android", "ios"):
        plan = plat.run_plan(platform=phone)
        assert (plan.embedded, plan.start_daemon, plan.scan_executor) == (True, False, "thread")
    assert plat.run_plan(platform="linux", embedded=True).scan_executor is None


def test_embedded_backend_passes_the_scan_executor():
    from deejai.ui_kivy.backend import Backend

    backend = Backend(embedded=True, index_backend="numpy", scan_executor="thread")
    try:
        engine = backend.engine()
        assert (engine.index_backend, engine.scan_executor) == ("numpy", "thread")
    finally:
        backend.close()


def _free_display() -> int:
    for n in range(120, 220):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display between :120 and :219")


@pytest.fixture
def xvfb():
    import importlib.util
    import shutil
    import time

    if importlib.util.find_spec("kivy") is None or shutil.which("Xvfb") is None:
        pytest.skip("needs kivy and Xvfb (apt-get install xvfb xauth libgl1-mesa-dri)")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "800x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb :{n} did not start")
        time.sleep(0.1)
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


def _png_size(path: str) -> tuple[int, int]:
    import struct

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.kivy
@pytest.mark.slow
def test_the_app_on_a_phone_sized_window_scans_and_makes_a_playlist(xvfb, tmp_path, monkeypatch):
    """The app in a 480x800 window, in the phone profile (its packages plus Kivy), with a phone
    build's decisions: the embedded engine scans a library in threads, the Radio screen makes a
    playlist, and what it shows is what the engine returns for the same parameters."""
    home = tmp_path / "home"
    lib = home / "Music"  # ~/Music for the app (HOME is tmp_path/home there)
    make_library(lib, n=8, seconds=6.0)
    site = phoneprofile.site_dir(tmp_path / "site",
                                 phoneprofile.PHONE_REQUIREMENTS + phoneprofile.KIVY_PACKAGES)
    shots = tmp_path / "shots"
    shots.mkdir()
    out = tmp_path / "app.json"
    # Kivy is in the site links, not in a phone-profile venv: the app always runs on the links
    cmd, env = phoneprofile.command(site, str(HERE / "phone_app.py"), "--lib", str(lib),
                                    "--out", str(out), "--shots", str(shots), venv=False)
    env.update({"DISPLAY": xvfb, "KIVY_NO_ARGS": "1", "KIVY_HOME": str(tmp_path / "kivy"),
                "KIVY_NO_CONSOLELOG": "1", "KIVY_NO_FILELOG": "1", "SDL_AUDIODRIVER": "dummy",
                "DEEJAI_HOME": str(tmp_path / "deejai-home"), "HOME": str(home),
                "DEEJAI_WORKERS": "2"})
    env.pop("DEEJAI_RESAMPLER", None)
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=400)
    assert out.exists(), f"the app wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result["error"] is None, result["error"] + "\n" + proc.stderr[-3000:]
    publish = os.environ.get("DEEJAI_KIVY_SCREENSHOTS")
    if publish:
        import shutil

        dest = Path(publish) if Path(publish).is_absolute() else HERE.parent / publish
        dest.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, dest / f"kivy-{png.name}")

    assert result["no_site"] and result["window"] == [480, 800]
    plan = result["plan"]
    assert (plan["embedded"], plan["start_daemon"], plan["index_backend"], plan["scan_executor"]) == (
        True, False, "numpy", "thread")
    assert result["engine"] == {"class": "Engine", "index_backend": "numpy", "scan_executor": "thread"}
    assert "in-process engine" in result["connection"]
    scan = result["scan"]
    assert scan["summary"]["state"] == "finished" and scan["summary"]["summary"]["added"] == 8
    assert scan["tracks"] == "8" and scan["errors"] == "0"
    assert result["analysis_threads"], "the scan ran no analysis threads"
    assert result["children_during_scan"] == 0, "a phone cannot start worker processes"
    assert result["resampler"] == "numpy"
    assert not set(result["third_party"]) & set(phoneprofile.ABSENT), result["third_party"]

    radio = result["radio"]
    assert radio["params"]["n"] == 5 and len(radio["shown_ids"]) == 5
    assert radio["shown_ids"][0] == result["seed"]["id"]
    # the same playlist from the engine itself, on the library the app wrote
    from deejai.engine.service import Engine

    monkeypatch.setenv("DEEJAI_HOME", str(tmp_path / "deejai-home"))
    engine = Engine(index_backend="numpy")
    try:
        expected = engine.radio(**radio["params"])
    finally:
        engine.close()
    assert radio["shown_ids"] == [e["id"] for e in expected["entries"]]
    for shot in result["screenshots"]:
        assert _png_size(shot) == (480, 800), shot


# --------------------------------------------------------------------------- the APK's source


def _spec_values(text: str) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(text)
    return dict(parser["app"])


def test_buildozer_spec_asks_for_the_tested_phone_profile(tmp_path):
    """The spec's requirements are the phone profile the tests run (LiteRT's Python package
    replaced by the Java interpreter), its Java source folder is staged, and main.py starts
    the embedded engine (with --debug for a first device run)."""
    from deejai.ui_kivy.stage import stage

    main_py = stage(tmp_path / "apk", debug=True)
    src = main_py.parent
    assert '["--embedded", "--debug"]' in main_py.read_text().replace("'", '"')
    spec = _spec_values((src / "buildozer.spec").read_text())
    wanted = {r.strip().split("==")[0] for r in spec["requirements"].split(",")}
    for package in phoneprofile.PHONE_REQUIREMENTS:
        if package == "ai-edge-litert":  # on the phone: the Java interpreter (gradle)
            assert "com.google.ai.edge.litert:litert:" in spec["android.gradle_dependencies"]
            continue
        assert package in wanted, package
    assert {"python3", "kivy", "pyjnius", "android", "sqlite3"} <= wanted
    absent = {"soundfile", "soxr", "librosa", "scipy", "numba", "faiss-cpu", "faiss", "rich",
              "threadpoolctl", "audioread", "ai-edge-litert"}
    assert not wanted & absent
    java = src / spec["android.add_src"]
    assert {p.name for p in java.rglob("*.java")} == {"Decoder.java", "PcmWindow.java"}
    assert (java / "org" / "deejai" / "Decoder.java").read_text().startswith("package org.deejai;")


def test_plugins_load_without_click():
    """An app without the command line still gets the exporters (the plugin manager checks
    the plugins' commands only where click exists)."""
    import sys

    code = ("import sys; sys.modules['click'] = None\n"
            "from deejai.plugins import manager\n"
            "print(','.join(sorted(manager.exporters())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {"m3u8", "xspf", "json"} <= set(out.stdout.strip().split(","))
