"""Scanning real folders of real MP3s with the real model, in real worker processes."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from deejai.engine.errors import ScanRunningError
from deejai.engine.index import open_index
from deejai.engine.library import Library
from deejai.engine.scan import AUDIO_EXTENSIONS, plan, scan, scan_lock, walk
from tests.audiogen import make_library, write_mp3

from deejai.models import DEFAULT_MODEL as MODEL  # noqa: E402
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight tagged 4-second MP3s, made once for the module; tests copy them."""
    root = tmp_path_factory.mktemp("corpus")
    make_library(root, n=8, seconds=4.0)
    return root


def copy_corpus(corpus: Path, dest: Path) -> list[Path]:
    shutil.copytree(corpus, dest)
    return sorted(dest.rglob("*.mp3"))


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool that remembers what was submitted (the scan accepts any Executor)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.submitted: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(args[0])
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def executor():
    with CountingExecutor(max_workers=1) as ex:
        yield ex


def lib_at(tmp_path: Path) -> Library:
    return Library(tmp_path / "home" / "library.sqlite")


def assert_consistent(lib: Library) -> None:
    """Every path once, integrity ok, the index holds exactly the ok tracks' vectors."""
    assert lib.integrity_check() == "ok"
    paths = [r[0] for r in lib.conn.execute("SELECT path FROM tracks")]
    assert len(paths) == len(set(paths))
    idx = open_index(lib, MODEL)
    ids, vecs = lib.vectors(MODEL)
    assert sorted(idx.ids().tolist()) == ids.tolist()
    ok = [r[0] for r in lib.conn.execute("SELECT id FROM tracks WHERE status = 'ok' ORDER BY id")]
    assert ok == ids.tolist()
    if len(ids):
        scores, got = idx.search(vecs, 1)
        # each vector finds itself, or an identical one (a duplicate file)
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
        np.testing.assert_allclose(idx.vectors_of(got[:, 0]), idx.vectors_of(ids), atol=1e-5)


# ----------------------------------------------------------------------------------- walking


def test_walk_filters_orders_and_survives_loops(tmp_path):
    root = tmp_path / "music"
    for name in ["b.mp3", "a.FLAC", "c.Mp3", "d.wav", "e.txt", "f.m4a", "g.ogg", "h.oga",
                 ".hidden.mp3", "sub/ü ñ 日本.mp3", ".git/x.mp3", "x.mp3/inner.mp3"]:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    os.symlink(root, root / "sub" / "loop")  # a symlink loop back to the root
    os.symlink(root / "missing.mp3", root / "dangling.mp3")
    skipped: list[str] = []
    found = walk([root, root / "b.mp3"], skipped)
    names = [os.path.relpath(f.path, root) for f in found]
    mp3s = ["b.mp3", "c.Mp3", "sub/ü ñ 日本.mp3", "x.mp3/inner.mp3"]
    assert sorted(names[:4]) == sorted(mp3s)  # .mp3 first, whatever the case
    assert set(names[4:]) == {"a.FLAC", "d.wav", "f.m4a", "g.ogg", "h.oga"}
    assert len(names) == len(set(names)) == 9
    assert all(os.path.isabs(f.path) for f in found)
    assert any("dangling.mp3" in s for s in skipped)
    assert AUDIO_EXTENSIONS[0] == ".mp3"


# ----------------------------------------------------------------------------------- scanning


def test_bad_files_become_error_rows_and_good_ones_are_analysed(tmp_path, corpus):
    root = tmp_path / "music"
    good = copy_corpus(corpus, root)
    (root / "zero.mp3").write_bytes(b"")
    (root / "text.mp3").write_text("this is a shopping list, not audio\n" * 20)
    rnd = np.random.default_rng(5).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    (root / "random.mp3").write_bytes(rnd)
    data = good[0].read_bytes()
    (root / "truncated.mp3").write_bytes(data[: len(data) // 3])
    (root / "header-only.mp3").write_bytes(data[:200])
    (root / "dir.mp3").mkdir()  # a folder named like a file
    uni = write_mp3(root / "Ünïcødé — 日本語 ♫.mp3", seconds=4.0, kind="chirp", seed=42,
                    tags={"artist": "Sigur Rós", "title": "Hoppípolla"})
    (root / ".hidden").mkdir()
    write_mp3(root / ".hidden" / "secret.mp3", seconds=3.0)
    os.symlink(root, root / "Artist 0" / "loop")
    unreadable = root / "unreadable.mp3"
    shutil.copy(good[1], unreadable)
    unreadable.chmod(0)
    readable_anyway = os.access(unreadable, os.R_OK)  # root reads everything

    lib = lib_at(tmp_path)
    progress = []
    s = scan(lib, [root], workers=2, model=MODEL, on_progress=lambda *a: progress.append(a))
    unreadable.chmod(0o644)

    bad = {"zero.mp3", "text.mp3", "random.mp3", "header-only.mp3"}
    if not readable_anyway:
        bad.add("unreadable.mp3")
    rows = {os.path.basename(t["path"]): t for t in lib.tracks(status=None)}
    for name in bad:
        assert rows[name]["status"] == "error", name
        assert rows[name]["error"], name
        assert "Traceback" not in rows[name]["error"]
    for p in good + [uni]:
        assert rows[p.name]["status"] == "ok", (p.name, rows[p.name]["error"])
    assert "truncated.mp3" in rows  # decodes partly or fails; either way it is recorded
    assert "secret.mp3" not in rows and "dir.mp3" not in rows
    assert rows[uni.name]["artist"] == "Sigur Rós"
    assert lib.track_by_path(uni)["title"] == "Hoppípolla"
    n_files = len(good) + 1 + len(bad | {"truncated.mp3", "unreadable.mp3"})
    assert s.files == n_files == len(rows)
    assert s.added + s.errors == n_files and s.errors >= len(bad)
    assert not s.cancelled and s.unchanged == 0
    # progress: starts at 0, ends at total, never goes back
    assert progress[0][:2] == (0, n_files) and progress[-1][0] == n_files
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert progress[-1][2] == s.errors
    assert_consistent(lib)
    # text of an error names the reason in one line
    assert "\n" not in rows["text.mp3"]["error"]
    lib.close()


def test_rescan_changes_moves_removals_duplicates(tmp_path, corpus, executor):
    root = tmp_path / "music"
    files = copy_corpus(corpus, root)
    lib = lib_at(tmp_path)
    s1 = scan(lib, [root], executor=executor, model=MODEL)
    assert s1.added == len(files) and s1.errors == 0
    n_submitted = len(executor.submitted)

    # nothing changed: no file is analysed (or opened)
    s2 = scan(lib, [root], executor=executor, model=MODEL)
    assert s2.unchanged == len(files) and s2.added == s2.updated == s2.moved == s2.removed == 0
    assert len(executor.submitted) == n_submitted

    a, b, c, d = files[:4]
    before = {t["path"]: t for t in lib.tracks(status=None)}
    rev = lib.revision
    # a: re-tagged (changes size and mtime, not the audio) -> updated
    from mutagen.easyid3 import EasyID3

    tags = EasyID3(str(a))
    tags["title"] = "A New Title"
    tags.save()
    # b: renamed into another folder -> moved, same id, not analysed
    moved_to = root / "Elsewhere" / "renamed b.mp3"
    moved_to.parent.mkdir()
    b.rename(moved_to)
    # c: deleted -> removed
    c.unlink()
    # d copied -> a duplicate; plus one new track
    dup = root / "copy of d.mp3"
    shutil.copy(d, dup)
    new = write_mp3(root / "brand new.mp3", seconds=4.0, kind="beat", seed=99)

    s3 = scan(lib, [root], executor=executor, model=MODEL)
    assert (s3.updated, s3.moved, s3.removed, s3.added) == (1, 1, 1, 2)
    assert s3.unchanged == len(files) - 4 + 1  # d itself
    assert s3.duplicates == 1
    analysed = set(executor.submitted[n_submitted:])
    assert analysed == {str(a), str(dup), str(new)}
    assert lib.track_by_path(a)["title"] == "A New Title"
    assert lib.track_by_path(a)["id"] == before[str(a)]["id"]
    m = lib.track_by_path(moved_to)
    assert m["id"] == before[str(b)]["id"] and m["audio_hash"] == before[str(b)]["audio_hash"]
    assert lib.track_by_path(b) is None and lib.track_by_path(c) is None
    assert lib.track_by_path(dup)["duplicate_of"] == before[str(d)]["id"]
    assert lib.revision > rev
    assert_consistent(lib)

    # a scan of a sub-folder never removes tracks outside it
    s4 = scan(lib, [root / "Elsewhere"], executor=executor, model=MODEL)
    assert s4.removed == 0 and s4.unchanged == 1
    assert lib.stats()["tracks"] == len(files) + 1
    lib.close()


def test_errors_are_retried_only_when_changed_or_asked(tmp_path, executor):
    root = tmp_path / "music"
    root.mkdir()
    bad = root / "bad.mp3"
    bad.write_text("not audio")
    lib = lib_at(tmp_path)
    assert scan(lib, [root], executor=executor, model=MODEL).errors == 1
    n = len(executor.submitted)
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.unchanged == 1 and s.errors == 0 and len(executor.submitted) == n
    s = scan(lib, [root], executor=executor, model=MODEL, retry_errors=True)
    assert s.errors == 1 and len(executor.submitted) == n + 1
    # the file is fixed: it changed, so it is analysed again and becomes ok
    write_mp3(bad, seconds=4.0, kind="chord", seed=3)
    results = []
    s = scan(lib, [root], executor=executor, model=MODEL, on_result=results.append)
    assert s.updated == 1 and s.errors == 0
    assert [r.path for r in results] == [str(bad)] and results[0].timings_s["total"] > 0
    assert lib.track_by_path(bad)["status"] == "ok" and lib.errors() == []
    lib.close()


def test_should_stop_cancels_and_commits_what_finished(tmp_path, corpus):
    root = tmp_path / "music"
    files = copy_corpus(corpus, root)
    lib = lib_at(tmp_path)
    seen = []

    def on_progress(done, total, errors, rate, eta):
        seen.append(done)

    s = scan(lib, [root], workers=1, model=MODEL, on_progress=on_progress,
             should_stop=lambda: bool(seen) and seen[-1] >= 2, batch_size=1)
    assert s.cancelled
    n_done = lib.stats()["tracks"]
    assert 2 <= n_done < len(files) and s.added == n_done
    s2 = scan(lib, [root], workers=1, model=MODEL)
    assert s2.added == len(files) - n_done and s2.unchanged == n_done and not s2.cancelled
    assert_consistent(lib)
    lib.close()


def test_second_scan_of_the_same_library_is_refused(tmp_path, corpus):
    root = tmp_path / "music"
    copy_corpus(corpus, root)
    lib = lib_at(tmp_path)
    other = Library(lib.path)
    with scan_lock(other):
        with pytest.raises(ScanRunningError, match="a scan is already running on this library"):
            scan(lib, [root], workers=1, model=MODEL)
    # the lock is released: scanning works again
    assert scan(lib, [root], workers=1, model=MODEL, should_stop=lambda: True).cancelled
    other.close()
    lib.close()


def test_lock_held_by_another_process(tmp_path):
    lib = lib_at(tmp_path)
    code = (
        "import sys, time\n"
        "from deejai.engine.library import Library\n"
        "from deejai.engine.scan import scan_lock\n"
        f"with scan_lock(Library({str(lib.path)!r})):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ScanRunningError):
            with scan_lock(lib):
                pass
        proc.kill()  # a killed scan leaves no stale lock: the kernel drops it
        proc.wait(30)
        with scan_lock(lib):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    lib.close()


def test_plan_hashes_only_when_something_vanished(tmp_path, corpus, executor):
    root = tmp_path / "music"
    copy_corpus(corpus, root)
    lib = lib_at(tmp_path)
    scan(lib, [root], executor=executor, model=MODEL)
    write_mp3(root / "new.mp3", seconds=3.0)
    calls = []

    def hasher(p):
        calls.append(p)
        return "x"

    p = plan(lib, walk([root]), [str(root)], model=MODEL, hasher=hasher)
    assert len(p.new) == 1 and calls == []  # nothing vanished: no file is read
    lib.close()


# ----------------------------------------------------------------------------------- kill -9


_RUNNER = """
import sys
from deejai.engine.library import Library
from deejai.engine.scan import scan
if __name__ == "__main__":
    lib = Library(sys.argv[1])
    s = scan(lib, [sys.argv[2]], workers=1, batch_size=2, batch_seconds=0.2)
    print("done", s.added, flush=True)
"""


def _rows(db: Path) -> int:
    """Tracks committed so far (read-only, beside the scan's writer; 0 before the file exists)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet
        return 0


def _marked_processes(marker: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("DEEJAI_TEST_MARKER") == marker:
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


@pytest.mark.slow
def test_kill_9_at_random_points_then_full_scan(tmp_path, corpus):
    root = tmp_path / "music"
    files = copy_corpus(corpus, root)
    for i, f in enumerate(files[:4]):  # 12 files: long enough to be killed mid-way
        shutil.copy(f, root / f"extra {i}.mp3")
    write_mp3(root / "extra tone.mp3", seconds=4.0, kind="noise", seed=77)
    (root / "broken.mp3").write_text("nope")
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    db = tmp_path / "home" / "library.sqlite"
    rnd = random.Random(1234)
    killed = 0
    total = len(list(root.rglob("*.mp3")))
    for attempt in range(3):
        marker = uuid.uuid4().hex
        env = {**os.environ, "DEEJAI_TEST_MARKER": marker, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, str(runner), str(db), str(root)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill at a random point of the scan: once the library holds a random number of rows
        # (those of earlier attempts count too), plus a random fraction of a batch
        target = rnd.randint(1, total - 2)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _rows(db) >= target:
                break
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(30) == -signal.SIGKILL  # not finished before the kill
        # the workers notice their parent is gone and exit: no orphans
        deadline = time.monotonic() + 30
        while _marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked_processes(marker) == []
        with Library(db) as lib:
            assert lib.integrity_check() == "ok"
    assert killed >= 1
    lib = Library(db)
    s = scan(lib, [root], workers=1, model=MODEL)
    assert not s.cancelled
    n_files = len(list(root.rglob("*.mp3")))
    rows = lib.tracks(status=None)
    assert len(rows) == n_files  # every file exactly once
    assert len(lib.errors()) == 1
    assert s.duplicates == 4
    assert_consistent(lib)
    lib.close()
