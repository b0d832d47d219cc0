"""``deejai scan / status / tracks`` run as real processes on real MP3s."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deejai.engine.library import Library
from tests.audiogen import make_library

REPO = Path(__file__).resolve().parents[1]


def deejai(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music")
    make_library(root, n=4, seconds=4.0)
    (root / "broken.mp3").write_text("not audio")
    return root


def test_scan_status_tracks(music, deejai_home):
    r = deejai("scan", "-j", "1", str(music))
    assert r.returncode == 0, r.stderr
    for word in ("added", "updated", "moved", "removed", "unchanged", "errors", "duplicates", "time"):
        assert word in r.stdout
    assert "deejai status --errors" in r.stdout  # one file failed

    r = deejai("status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["tracks"] == 4 and st["errors"] == 1 and st["model"] == "msd-musicnn-v2"
    assert st["last_scan"]["summary"]["added"] == 4
    assert str(deejai_home) in st["library_file"]

    r = deejai("status", "--errors")
    assert r.returncode == 0 and "broken.mp3" in r.stdout and "tracks" in r.stdout

    r = deejai("tracks", "--json", "chord")
    rows = json.loads(r.stdout)
    assert [t["title"] for t in rows] == ["Chord 0"]
    r = deejai("tracks", "artist", "1")
    assert r.returncode == 0 and "Noise 1" in r.stdout
    r = deejai("tracks", "--limit", "2", "--json")
    assert len(json.loads(r.stdout)) == 2

    # a second scan: nothing to do, JSON report
    r = deejai("scan", "--json", str(music))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)["summary"]
    assert summary["unchanged"] == 5 and summary["added"] == 0

    # no folder and no music_dirs setting: the folders of the last scan, said on stderr
    r = deejai("scan", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert f"scanning {music} (the folders of the last scan)" in r.stderr
    assert "unchanged" in r.stdout

    # status says whether a daemon answered
    r = deejai("status")
    assert "daemon" in r.stdout and "not asked (--no-daemon)" in r.stdout


def test_scan_refused_while_another_process_scans(music, deejai_home):
    from deejai.engine.config import paths

    lib = Library(paths().library_file)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from deejai.engine.library import Library\n"
         "from deejai.engine.scan import scan_lock\n"
         f"with scan_lock(Library({str(lib.path)!r})):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(120)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = deejai("scan", str(music))
        assert r.returncode == 1
        assert "a scan is already running on this library" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait(30)
        lib.close()


def test_missing_folder_is_a_usage_error(tmp_path):
    r = deejai("scan", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_ctrl_c_cancels_and_commits(tmp_path, deejai_home):
    root = tmp_path / "many"
    # long enough that the first committed batch lands mid-scan: a batch is 32 files (or 2 s),
    # and 68 more files take seconds even with the fast model
    make_library(root, n=100, seconds=4.0)
    env = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deejai.ui_cli.main", "scan", "-j", "1", str(root)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    from deejai.engine.config import paths

    db = paths().library_file
    # wait until a first batch is committed, then press Ctrl-C (SIGINT to the process group)
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            with Library(db) as lib:
                n = lib.stats()["tracks"]
            if n >= 1:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "scan cancelled" in out
    with Library(db) as lib:
        done = lib.stats()["tracks"]
        assert lib.integrity_check() == "ok"
    assert 1 <= done < 100
    # no worker process outlives the command (the resource tracker may take a moment to exit)
    deadline = time.monotonic() + 15
    while True:
        survivors = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        if not survivors.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert survivors.stdout.strip() == ""
