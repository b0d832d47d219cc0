"""Nothing lost, nobody locked out (issue 14, the data half): damaged index sidecars, folders
that cannot be read or were unmounted, killed workers, damaged and emptied databases, playlist
files that must stay one entry per line and inside the folders allowed, and file modes.

Real MP3s, a real model, real SQLite files, real ``deejai`` processes and a real daemon on a
real socket; damage is done to the files the way a disk, a crash or a user does it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from deejai.engine.config import paths
from deejai.engine.index import FaissIndex, load_index, open_index, sidecar_path
from deejai.engine.library import MIGRATIONS, Library
from deejai.engine.pool import WorkerPool
from deejai.engine.scan import init_worker, scan
from deejai.models import DEFAULT_MODEL as MODEL
from tests.audiogen import make_library, write_mp3
from tests.test_rpc import Daemon

REPO = Path(__file__).resolve().parents[1]


def deejai(*args: str, home: Path | None = None, env: dict | None = None, cwd: Path | None = None,
           user: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``deejai ARGS`` as a process of its own (in process, no daemon unless ``env`` says)."""
    e = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200",
         "DEEJAI_WORKERS": "1"}
    if home is not None:
        e["DEEJAI_HOME"] = str(home)
    e.update(env or {})
    cmd = [sys.executable, "-m", "deejai.ui_cli.main", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=cwd or REPO, env=e, capture_output=True, text=True,
                          timeout=timeout)


def user_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The process failed with exactly one ``deejai: error:`` line and no traceback."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("deejai: error: "), r.stderr
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def executor():
    """One analysis thread for the module's in-process scans (its model is loaded once)."""
    with ThreadPoolExecutor(max_workers=1) as ex:
        yield ex


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-corpus")
    make_library(root, n=6, seconds=4.0)
    return root


#: Tracks of the scanned library: more than a playlist's candidate count (16 for a short
#: radio), so that playlists search the vector index instead of ranking every track.
N_BIG = 24


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-big")
    make_library(root, n=N_BIG, seconds=3.0)
    return root


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, big, executor) -> Path:
    """A DEEJAI_HOME whose library holds ``big`` (scanned once for the module)."""
    home = tmp_path_factory.mktemp("faults-home")
    lib = Library(home / "data" / "library.sqlite")
    s = scan(lib, [big], executor=executor, model=MODEL)
    assert s.added == N_BIG and s.errors == 0
    lib.close()
    return home


def copy_home(template: Path, home: Path) -> Path:
    """The scanned library, copied into this test's DEEJAI_HOME."""
    shutil.copytree(template / "data", home / "data", dirs_exist_ok=True)
    return home


def radio_ids(home: Path, seed: str = "#1", n: int = 3) -> tuple[list[int], str]:
    r = deejai("radio", seed, "-n", str(n), "--format", "json", home=home)
    assert r.returncode == 0, r.stderr
    return [e["id"] for e in json.loads(r.stdout)["entries"]], r.stderr


# ================================================================== 1. index sidecars


def _sidecar(home: Path) -> Path:
    with Library(home / "data" / "library.sqlite") as lib:
        return sidecar_path(lib, MODEL)


def _damage_truncated(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def _damage_not_a_zip(path: Path) -> None:
    path.write_bytes(b"\x00" * 4096)


def _same_meta(good) -> dict:
    """The metadata of a good sidecar, to write a forged one that claims to be it."""
    meta = {"model": good.model, "revision": good.revision, "library_id": good.library_id}
    if hasattr(good, "checksum"):
        meta["checksum"] = good.checksum
    return meta


def _damage_other_dimension(path: Path) -> None:
    """A well-formed sidecar of the right library, revision, ids... and 16-d vectors."""
    good = load_index(path)
    ids = good.ids()
    vecs = np.random.default_rng(0).standard_normal((len(ids), 16)).astype(np.float32)
    FaissIndex.build(ids, vecs, **_same_meta(good)).save(path)


def _damage_meta_dimension(path: Path) -> None:
    """Metadata that says 200-d over a FAISS payload of 16-d vectors."""
    import faiss

    good = load_index(path)
    ids = good.ids()
    vecs = np.random.default_rng(1).standard_normal((len(ids), 16)).astype(np.float32)
    small = FaissIndex.build(ids, vecs)
    meta = dict(good.meta)
    np.savez(path, meta=np.array(json.dumps(meta)),
             faiss=faiss.serialize_index(small._index))


def _damage_other_vectors(path: Path) -> None:
    """The right ids, metadata and checksum, other vectors: only a look inside tells."""
    good = load_index(path)
    ids = good.ids()
    vecs = np.random.default_rng(2).standard_normal((len(ids), good.dim)).astype(np.float32)
    FaissIndex.build(ids, vecs, **_same_meta(good)).save(path)


DAMAGE = {
    "truncated": _damage_truncated,
    "empty": _damage_empty,
    "not-a-zip": _damage_not_a_zip,
    "other-dimension": _damage_other_dimension,
    "meta-dimension": _damage_meta_dimension,
    "other-vectors": _damage_other_vectors,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_sidecar_is_rebuilt_with_one_warning(damage, scanned, deejai_home):
    home = copy_home(scanned, deejai_home)
    clean_ids, clean_err = radio_ids(home)
    assert "WARNING" not in clean_err
    sidecar = _sidecar(home)
    DAMAGE[damage](sidecar)

    r = deejai("status", home=home)  # reports, never fails on a cache
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "tracks" in r.stdout and str(N_BIG) in r.stdout

    ids, err = radio_ids(home)
    assert ids == clean_ids  # the library's own vectors, never the sidecar's
    warnings = [ln for ln in err.splitlines() if "WARNING" in ln]
    assert len(warnings) == 1 and str(sidecar) in warnings[0], err
    assert "rebuilt it from the library" in warnings[0]
    # written back, atomically, and good from now on
    assert not list(sidecar.parent.glob(".*.tmp"))
    with Library(home / "data" / "library.sqlite") as lib:
        idx = load_index(sidecar)
        assert sorted(idx.ids().tolist()) == lib.vector_ids(MODEL).tolist()
    ids, err = radio_ids(home)
    assert ids == clean_ids and "WARNING" not in err


def test_a_scan_repairs_a_damaged_sidecar(scanned, big, deejai_home):
    home = copy_home(scanned, deejai_home)
    sidecar = _sidecar(home)
    _damage_truncated(sidecar)
    r = deejai("scan", str(big), home=home)
    assert r.returncode == 0, r.stderr
    assert "unchanged" in r.stdout and "Traceback" not in r.stderr
    load_index(sidecar)  # readable again
    r = deejai("status", "--json", home=home)
    assert json.loads(r.stdout)["index"]["fresh"] is True


def test_the_daemon_recovers_from_a_damaged_sidecar(scanned, deejai_home):
    home = copy_home(scanned, deejai_home)
    clean_ids, _ = radio_ids(home)
    sidecar = _sidecar(home)
    _damage_truncated(sidecar)
    d = Daemon(home).start()
    try:
        with d.client() as c:
            st = c.status()
            assert st["tracks"] == N_BIG and st["index"].get("damaged")
            assert [e["id"] for e in c.radio(seeds=["#1"], n=3)["entries"]] == clean_ids
            assert len(c.join(waypoints=["#1", "#6"], n=2)["entries"]) == 4
            assert c.status()["index"]["fresh"] is True
    finally:
        d.stop()
    warnings = [ln for ln in d.stderr().splitlines() if "WARNING" in ln and "index" in ln]
    assert len(warnings) == 1 and str(sidecar) in warnings[0], d.stderr()


# ================================================================== 2. folders not read


def _ids(lib: Library) -> dict[str, int]:
    return {t["path"]: t["id"] for t in lib.tracks(status="ok", limit=None)}


def test_an_unmounted_drive_removes_nothing_and_its_tracks_come_back(tmp_path, corpus, executor):
    root = tmp_path / "usb"
    shutil.copytree(corpus, root)
    lib = Library(tmp_path / "lib" / "library.sqlite")
    scan(lib, [root], executor=executor, model=MODEL)
    before = _ids(lib)
    assert len(before) == 6

    # the drive is unmounted: its mount point is an empty folder
    parked = tmp_path / "parked"
    root.rename(parked)
    root.mkdir()
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.removed == 0 and s.kept == 6 and lib.stats()["tracks"] == 6
    assert len(s.kept_why) == 1 and str(root) in s.kept_why[0] and "--prune" in s.kept_why[0]

    # the mount point itself is gone
    root.rmdir()
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.removed == 0 and s.kept == 6 and "not found" in s.kept_why[0]

    # mounted again: the same tracks, the same ids, nothing analysed
    parked.rename(root)
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert (s.added, s.updated, s.removed, s.unchanged) == (0, 0, 0, 6)
    assert _ids(lib) == before
    lib.close()


def test_prune_removes_on_purpose_and_removed_tracks_get_their_ids_back(tmp_path, corpus,
                                                                          executor):
    root = tmp_path / "usb"
    shutil.copytree(corpus, root)
    lib = Library(tmp_path / "lib" / "library.sqlite")
    scan(lib, [root], executor=executor, model=MODEL)
    before = _ids(lib)
    parked = tmp_path / "parked"
    root.rename(parked)
    root.mkdir()
    s = scan(lib, [root], executor=executor, model=MODEL, prune=True)
    assert s.removed == 6 and lib.stats()["tracks"] == 0 and lib.stats()["removed"] == 6
    assert lib.tracks(limit=None) == [] and open_index(lib, MODEL).ntotal == 0

    # the files come back, at their old paths: their ids and vectors, without analysis
    root.rmdir()
    parked.rename(root)
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert (s.added, s.updated, s.moved, s.restored) == (0, 0, 6, 6)
    assert _ids(lib) == before and lib.stats()["removed"] == 0
    assert sorted(open_index(lib, MODEL).ids().tolist()) == sorted(before.values())

    # removed again, then copied back to another drive: found by their audio hash
    shutil.rmtree(root)
    root.mkdir()
    assert scan(lib, [root], executor=executor, model=MODEL, prune=True).removed == 6
    other = tmp_path / "other drive"
    shutil.copytree(corpus, other)
    s = scan(lib, [other], executor=executor, model=MODEL)
    assert (s.added, s.restored) == (0, 6)
    after = {os.path.relpath(p, other): i for p, i in _ids(lib).items()}
    assert after == {os.path.relpath(p, root): i for p, i in before.items()}
    lib.close()


def test_a_deleted_album_folder_and_a_deleted_file_are_still_removed(tmp_path, corpus, executor):
    root = tmp_path / "music"
    shutil.copytree(corpus, root)
    lib = Library(tmp_path / "lib" / "library.sqlite")
    scan(lib, [root], executor=executor, model=MODEL)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    gone = len(list(folders[0].glob("*.mp3")))
    shutil.rmtree(folders[0])
    next(folders[1].glob("*.mp3")).unlink()
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.removed == gone + 1 and s.kept == 0 and lib.stats()["tracks"] == 6 - gone - 1
    lib.close()


def test_a_dangling_link_to_an_unmounted_folder_removes_nothing(tmp_path, corpus, executor):
    """~/Music/NAS -> /mnt/nas/music: the NAS is not mounted, the link dangles."""
    root, nas = tmp_path / "music", tmp_path / "nas"
    shutil.copytree(corpus, nas)
    root.mkdir()
    write_mp3(root / "local.mp3", seconds=4.0, kind="chirp", seed=9)
    (root / "NAS").symlink_to(nas)
    lib = Library(tmp_path / "lib" / "library.sqlite")
    assert scan(lib, [root], executor=executor, model=MODEL).added == 7
    before = _ids(lib)
    nas.rename(tmp_path / "nas-unmounted")
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.removed == 0 and s.kept == 6 and lib.stats()["tracks"] == 7
    assert any("NAS" in line and "could not be read" in line for line in s.kept_why)
    (tmp_path / "nas-unmounted").rename(nas)
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.unchanged == 7 and s.added == 0 and _ids(lib) == before
    lib.close()


def _unprivileged_user(env: dict) -> str | None:
    """A user for whom a chmod 000 folder is unreadable: ``nobody`` when we are root (root
    reads everything) and ``setpriv`` can switch to it; None when we are not root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot run a scan that a chmod 000 "
                    "folder stops (root reads every folder)")
    try:
        user_group("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user 'nobody' to run the scan as")
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", f"--regid={user_group('nobody')}", "--clear-groups",
         sys.executable, "-c", "import deejai.engine.scan"],
        cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root, and the user 'nobody' cannot run this Python and "
                    f"deejai (a checkout or interpreter under a private folder): {probe.stderr[-200:]!r}")
    return "nobody"


def test_an_unreadable_folder_removes_nothing(tmp_path_factory, corpus):
    import tempfile

    # a folder the unprivileged user may use (pytest's temporary folders are root's, 0700)
    base = Path(tempfile.mkdtemp(prefix="deejai-unreadable-"))
    # threads, not worker processes: where the interpreter lies under a folder the user
    # cannot enter, this process runs but could not spawn workers; the walk is what counts
    env = {"HOME": str(base), "DEEJAI_SCAN_EXECUTOR": "thread"}
    user = _unprivileged_user(env)
    try:
        root, home = base / "music", base / "home"
        shutil.copytree(corpus, root)
        home.mkdir()
        if user is not None:
            uid, gid = __import__("pwd").getpwnam(user)[2:4]
            for p in [base, *base.rglob("*")]:
                os.chown(p, uid, gid)
        r = deejai("scan", str(root), home=home, user=user, env=env)
        assert r.returncode == 0, r.stderr
        db = home / "data" / "library.sqlite"
        with Library(db) as lib:
            before = _ids(lib)
        locked = sorted(p for p in root.iterdir() if p.is_dir())[0]
        n_locked = len(list(locked.glob("*.mp3")))
        locked.chmod(0)
        try:
            r = deejai("scan", "--json", str(root), home=home, user=user, env=env)
        finally:
            locked.chmod(0o755)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)["summary"]
        assert summary["removed"] == 0 and summary["kept"] == n_locked
        assert any(str(locked) in s for s in summary["skipped"])
        assert any(str(locked) in s and "could not be read" in s for s in summary["kept_why"])
        with Library(db) as lib:
            assert _ids(lib) == before
        r = deejai("scan", "--json", str(root), home=home, user=user, env=env)
        assert json.loads(r.stdout)["summary"]["unchanged"] == 6
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_cli_says_why_it_kept_tracks(tmp_path, corpus, deejai_home):
    root = tmp_path / "usb"
    shutil.copytree(corpus, root)
    assert deejai("scan", str(root)).returncode == 0
    shutil.rmtree(root)
    root.mkdir()
    r = deejai("scan", str(root))
    assert r.returncode == 0, r.stderr
    assert "kept:" in r.stdout and "an unmounted drive?" in r.stdout
    assert json.loads(deejai("status", "--json").stdout)["tracks"] == 6
    # a folder that does not exist is a usage error, and removes nothing either
    root.rmdir()
    r = deejai("scan", str(root))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = deejai("scan", "--prune", str(root))
    assert r.returncode == 0, r.stderr
    assert json.loads(deejai("status", "--json").stdout)["tracks"] == 0


# ================================================================== 3. killed workers


def _die_on(marker: str, victim: str, times: int, fn, path: str, *args):
    """Task wrapper run in a pool worker: the first ``times`` tries of a file whose name
    holds ``victim`` are killed with SIGKILL (as the OOM killer does), mid-task."""
    log = Path(marker) / (hashlib.md5(path.encode()).hexdigest() + ".pids")
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if victim in os.path.basename(path) and len(log.read_text().split()) <= times:
        os.kill(os.getpid(), signal.SIGKILL)
    return fn(path, *args)


class KillingPool(WorkerPool):
    """A real WorkerPool whose workers are killed on a chosen file (see :func:`_die_on`)."""

    def __init__(self, marker: Path, victim: str, times: int, workers: int = 1):
        super().__init__(workers, initializer=init_worker, initargs=(MODEL, 1))
        self.marker, self.victim, self.times = str(marker), victim, times
        self.fresh = 0

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_die_on, self.marker, self.victim, self.times, fn, *args)

    def submit_fresh(self, fn, /, *args, **kwargs):
        self.fresh += 1
        return super().submit_fresh(_die_on, self.marker, self.victim, self.times, fn, *args)

    def pids_of(self, path: Path) -> list[int]:
        log = Path(self.marker) / (hashlib.md5(str(path).encode()).hexdigest() + ".pids")
        return [int(x) for x in log.read_text().split()]


def test_a_worker_killed_once_is_retried_in_a_fresh_worker(tmp_path, corpus):
    root = tmp_path / "music"
    shutil.copytree(corpus, root)
    victim = sorted(root.rglob("*.mp3"))[2]
    marker = tmp_path / "marker"
    marker.mkdir()
    lib = Library(tmp_path / "lib" / "library.sqlite")
    pool = KillingPool(marker, victim.name, times=1)
    try:
        s = scan(lib, [root], executor=pool, model=MODEL)
        regular = pool.worker_pids()
    finally:
        pool.shutdown()
    assert s.errors == 0 and s.added == 6 and s.retried == 1 and pool.fresh == 1
    assert lib.track_by_path(victim)["status"] == "ok"
    first, retry = pool.pids_of(victim)
    assert retry != first and retry not in regular  # a worker started for the retry alone
    lib.close()


def test_a_worker_killed_twice_is_a_transient_error_that_the_next_scan_retries(
        tmp_path, corpus, executor):
    root = tmp_path / "music"
    shutil.copytree(corpus, root)
    victim = sorted(root.rglob("*.mp3"))[0]
    (root / "not audio.mp3").write_text("a shopping list\n" * 50)
    marker = tmp_path / "marker"
    marker.mkdir()
    lib = Library(tmp_path / "lib" / "library.sqlite")
    pool = KillingPool(marker, victim.name, times=2)
    try:
        s = scan(lib, [root], executor=pool, model=MODEL)
    finally:
        pool.shutdown()
    assert s.retried == 1 and s.errors == 2 and s.added == 5
    row = lib.track_by_path(victim)
    assert row["status"] == "error" and row["error_kind"] == "transient"
    assert "died" in row["error"] and "again" in row["error"]
    bad = lib.track_by_path(root / "not audio.mp3")
    assert bad["status"] == "error" and bad["error_kind"] == "permanent"
    # nothing changed on disk; the next scan tries the transient one again, not the other
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.updated == 1 and s.errors == 0 and s.unchanged == 6
    assert lib.track_by_path(victim)["status"] == "ok"
    assert lib.track_by_path(root / "not audio.mp3")["error_kind"] == "permanent"
    lib.close()


def test_a_library_hurt_by_the_old_scan_heals(tmp_path, corpus, executor):
    """A schema-1 library where a killed worker made a good track a permanent error: after
    the migration the next scan analyses it again."""
    root = tmp_path / "music"
    shutil.copytree(corpus, root)
    victim = sorted(root.rglob("*.mp3"))[1]
    db = tmp_path / "lib" / "library.sqlite"
    db.parent.mkdir()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("BEGIN")
    MIGRATIONS[0](con)
    con.execute("PRAGMA user_version = 1")
    st = victim.stat()
    con.execute("INSERT INTO tracks (path, size, mtime_ns, status, error) VALUES (?, ?, ?, "
                "'error', 'worker process 4242 died while running a task (killed by signal "
                "SIGKILL)')", (str(victim), st.st_size, st.st_mtime_ns))
    con.execute("COMMIT")
    con.close()
    lib = Library(db)
    assert lib.schema_version == len(MIGRATIONS)
    assert lib.track_by_path(victim)["error_kind"] == "transient"
    s = scan(lib, [root], executor=executor, model=MODEL)
    assert s.errors == 0 and s.added == 5 and s.updated == 1
    assert lib.track_by_path(victim)["status"] == "ok"
    lib.close()


# ================================================================== 4. damaged databases


def _checkpoint(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _corrupt_page(db: Path, table: str) -> int:
    """Overwrite one b-tree page of ``table`` (the middle leaf) with 0xFF bytes; returns how
    many rows the page held."""
    _checkpoint(db)
    con = sqlite3.connect(db)
    pages = con.execute(
        "SELECT pageno, ncell FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
        (table,)).fetchall()
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    page, rows = pages[len(pages) // 2]
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * size)
    return rows


def _untouched(db: Path, digest: str) -> None:
    assert sha256(db) == digest
    wal = Path(str(db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_damaged_database_gives_one_line_and_is_never_written(scanned, big, deejai_home):
    home = copy_home(scanned, deejai_home)
    db = home / "data" / "library.sqlite"
    _corrupt_page(db, "tracks")
    digest = sha256(db)
    for args in (["status"], ["radio", "#1", "-n", "3"], ["tracks"], ["scan", str(big)]):
        line = one_line_error(deejai(*args, home=home))
        assert str(db) in line and "damaged" in line and "deejai doctor" in line, line
        _untouched(db, digest)
    r = deejai("doctor", home=home)
    assert r.returncode == 1 and "damaged" in r.stdout and "--recover" in r.stdout


def test_the_daemon_answers_a_damaged_database_with_an_error(scanned, deejai_home):
    home = copy_home(scanned, deejai_home)
    db = home / "data" / "library.sqlite"
    _corrupt_page(db, "tracks")
    digest = sha256(db)
    d = Daemon(home).start()
    try:
        from deejai.engine.errors import DeejaiError

        with d.client() as c:
            for call in (lambda: c.status(), lambda: c.radio(seeds=["#1"], n=3)):
                with pytest.raises(DeejaiError, match="damaged.*deejai doctor") as info:
                    call()
                assert info.value.code == -32033  # LibraryDamagedError, in docs/protocol.md
            assert c.ping()["pong"]  # and it keeps serving
    finally:
        d.stop()
    assert "Traceback" not in d.stderr()
    _untouched(db, digest)


def test_doctor_recovers_a_damaged_database(scanned, big, deejai_home):
    home = copy_home(scanned, deejai_home)
    db = home / "data" / "library.sqlite"
    on_page = _corrupt_page(db, "vectors")
    assert 1 <= on_page < N_BIG // 2
    assert "damaged" in one_line_error(deejai("radio", "#1", home=home))
    r = deejai("doctor", "--recover", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"recovered {N_BIG} of {N_BIG} tracks" in r.stdout and "salvage copy" in r.stdout
    assert list(db.parent.glob("library.sqlite.damaged-*"))  # the damaged file is kept
    assert deejai("doctor", home=home).returncode == 0
    r = deejai("status", "--json", home=home)
    assert r.returncode == 0 and json.loads(r.stdout)["tracks"] == N_BIG
    with Library(db) as lib:  # every vector but those on the damaged page
        assert len(lib.vector_ids(MODEL)) == N_BIG - on_page
    # the rows on the damaged page are gone: the next scan analyses those tracks again
    r = deejai("scan", "--json", str(big), home=home)
    summary = json.loads(r.stdout)["summary"]
    assert (summary["added"], summary["reanalysed"], summary["errors"]) == (0, on_page, 0)
    with Library(db) as lib:
        assert lib.integrity_check() == "ok"
        assert len(lib.vector_ids(MODEL)) == N_BIG
    assert len(radio_ids(home)[0]) == 3


def test_doctor_uses_sqlite_recover_where_it_works(scanned, deejai_home):
    from deejai.engine.doctor import sqlite_recover_available

    if not sqlite_recover_available():
        pytest.skip("the sqlite3 program here has no working .recover (Debian 12's 3.40.1 "
                    "lacks sqlite_dbpage); the salvage copy is tested above")
    home = copy_home(scanned, deejai_home)
    _corrupt_page(home / "data" / "library.sqlite", "vectors")
    r = deejai("doctor", "--recover", home=home)
    assert r.returncode == 0 and "sqlite3 .recover" in r.stdout, r.stdout + r.stderr
    assert json.loads(deejai("status", "--json", home=home).stdout)["tracks"] == N_BIG


def test_an_emptied_database_is_reported_not_taken_for_a_new_library(scanned, big,
                                                                     deejai_home):
    home = copy_home(scanned, deejai_home)
    db = home / "data" / "library.sqlite"
    db.write_bytes(b"")
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    for args in (["status"], ["scan", str(big)], ["radio", "#1"]):
        line = one_line_error(deejai(*args, home=home))
        assert "0 bytes" in line and f"{N_BIG} tracks" in line and "doctor --reset" in line, line
        assert db.stat().st_size == 0
    r = deejai("doctor", home=home)
    assert r.returncode == 1 and "0 bytes" in r.stdout
    r = deejai("doctor", "--reset", home=home)
    assert r.returncode == 0, r.stderr
    r = deejai("status", "--json", home=home)
    assert r.returncode == 0 and json.loads(r.stdout)["tracks"] == 0


# ================================================================== 11. playlist files


@pytest.fixture(scope="module")
def nasty(tmp_path_factory, executor) -> Path:
    """A scanned DEEJAI_HOME whose tracks have a newline in a file name and control
    characters in their titles."""
    from mutagen.easyid3 import EasyID3

    home = tmp_path_factory.mktemp("nasty-home")
    root = tmp_path_factory.mktemp("nasty-music")
    make_library(root, n=4, seconds=4.0)
    evil = write_mp3(root / "new\nline.mp3", seconds=4.0, kind="chirp", seed=5)
    tags = EasyID3()
    tags["title"] = "evil\r\n#EXTM3U\x1b[2J\u2028/etc/passwd"
    tags["artist"] = "line\x0bbreak\x85"
    tags.save(str(evil))
    lib = Library(home / "data" / "library.sqlite")
    assert scan(lib, [root], executor=executor, model=MODEL).added == 5
    lib.close()
    return home


def _playlist_through(home: Path) -> dict:
    with Library(home / "data" / "library.sqlite") as lib:
        evil = next(t for t in lib.tracks(limit=None) if "\n" in t["path"])
    r = deejai("radio", f"#{evil['id']}", "-n", "5", "--format", "json", home=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_exported_playlists_keep_one_entry_per_line(nasty, deejai_home, tmp_path):
    home = copy_home(nasty, deejai_home)
    playlist = _playlist_through(home)
    paths_in = [e["path"] for e in playlist["entries"]]
    assert any("\n" in p for p in paths_in)
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("m3u8", "xspf", "json"):
        r = deejai("radio", f"#{playlist['entries'][0]['id']}", "-n", "5", "-o",
                   str(out / f"trip.{fmt}"), home=home)
        assert r.returncode == 0, r.stderr

    lines = (out / "trip.m3u8").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#EXTM3U" and lines[-1] == ""
    body = lines[1:-1]
    assert len(body) == 2 * len(paths_in)  # one #EXTINF line and one location per entry
    back = []
    for extinf, location in zip(body[::2], body[1::2]):
        assert extinf.startswith("#EXTINF:") and not location.startswith("#")
        assert all(ch.isprintable() for ch in extinf + location)
        back.append(unquote(urlparse(location).path) if location.startswith("file://")
                    else location)
    assert back == paths_in
    from deejai.plugins.tray.logic import read_playlist_paths

    assert [str(p) for p in read_playlist_paths(out / "trip.m3u8")] == paths_in

    root = ET.parse(out / "trip.xspf").getroot()  # well-formed XML 1.0
    ns = {"x": "http://xspf.org/ns/0/"}
    locations = [unquote(urlparse(t.text).path) for t in root.findall(".//x:location", ns)]
    assert locations == paths_in
    for t in root.iter():
        assert all(ch.isprintable() or ch in "\n " for ch in (t.text or ""))

    data = json.loads((out / "trip.json").read_text(encoding="utf-8"))
    assert [e["path"] for e in data["entries"]] == paths_in  # escaped, not lost
    assert [e["title"] for e in data["entries"]] == [e["title"] for e in playlist["entries"]]
    assert "\u2028" not in (out / "trip.json").read_text(encoding="utf-8")


class CwdDaemon(Daemon):
    """``deejai serve`` started in a working folder of the test's choosing."""

    def __init__(self, home: Path, cwd: Path, env: dict | None = None):
        super().__init__(home, env=env)
        self.cwd = cwd

    def start(self, wait: bool = True) -> "CwdDaemon":
        self.home.mkdir(parents=True, exist_ok=True)
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.cwd,
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self


def test_the_daemon_writes_playlists_only_where_the_settings_allow(nasty, deejai_home,
                                                                    tmp_path):
    from deejai.engine.errors import ConfigError

    home = copy_home(nasty, deejai_home)
    playlist = _playlist_through(home)
    cwd = tmp_path / "daemon-cwd"
    cwd.mkdir()
    allowed = tmp_path / "exports"
    allowed.mkdir()
    victim = tmp_path / "dot-bashrc"
    victim.write_text("# the user's own file\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    playlists = home / "data" / "playlists"
    playlists.mkdir(parents=True, exist_ok=True)
    (playlists / "escape").symlink_to(outside)
    d = CwdDaemon(home, cwd, env={"DEEJAI_EXPORT_DIRS": str(allowed)}).start()
    try:
        with d.client() as c:
            for bad in (str(victim), str(outside / "x.m3u8"), "../../x.m3u8",
                        str(playlists / "escape" / "x.m3u8"), "", "/"):
                with pytest.raises(ConfigError):
                    c.export(playlist, format="m3u8", path=bad)
            assert victim.read_text() == "# the user's own file\n"
            assert list(outside.iterdir()) == []
            # a relative name lands in the playlist folder, never in the daemon's folder
            written = c.export(playlist, format="m3u8", path="mine.m3u8")
            assert written["path"] == str(playlists / "mine.m3u8")
            assert (playlists / "mine.m3u8").is_file() and list(cwd.iterdir()) == []
            written = c.export(playlist, path=str(allowed / "trip.xspf"))
            assert Path(written["path"]).parent == allowed
            # library.scan never resolves against the daemon's folder either
            write_mp3(cwd / "in the daemon's folder.mp3", seconds=3.0)
            for bad in ([""], ["."], ["music"]):
                with pytest.raises(ConfigError, match="absolute"):
                    c.scan(paths=bad)
        # the command line writes wherever it is told, itself, while the daemon runs
        target = tmp_path / "anywhere" / "cli.m3u8"
        target.parent.mkdir()
        r = deejai("radio", f"#{playlist['entries'][0]['id']}", "-n", "3", "-o", str(target),
                   home=home, env={"DEEJAI_NO_DAEMON": ""})
        assert r.returncode == 0, r.stderr
        assert target.read_text(encoding="utf-8").startswith("#EXTM3U\n")
    finally:
        d.stop()


# ================================================================== 13. permissions


def _umask(mask: int):
    return lambda: os.umask(mask)


def test_data_state_and_log_files_are_private_whatever_the_umask(corpus, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "DEEJAI_HOME": str(home), "DEEJAI_NO_DAEMON": "1",
           "PYTHONPATH": str(REPO), "DEEJAI_WORKERS": "1"}
    r = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "scan", str(corpus)],
                       env=env, capture_output=True, text=True, timeout=240,
                       preexec_fn=_umask(0))
    assert r.returncode == 0, r.stderr
    p = paths_for(home)
    for folder in (p.data_dir, p.state_dir, p.config_dir, p.runtime_dir):
        assert mode(folder) == 0o700, folder
    db = p.library_file
    files = [db, db.with_name(db.name + ".state.json"), db.with_name(db.name + ".scan.lock"),
             *db.parent.glob("*.index.npz")]
    assert len(files) == 4
    for f in files:
        assert mode(f) == 0o600, f
    # the library map's cache (deejai map), made under umask 0 as well
    r = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "map", "-o",
                        str(tmp_path / "map.png")], env=env, capture_output=True, text=True,
                       timeout=240, preexec_fn=_umask(0))
    assert r.returncode == 0, r.stderr
    (cache,) = db.parent.glob("*.map.npz")
    assert mode(cache) == 0o600
    # the WAL files, while a connection holds them open (made under umask 0 too)
    old = os.umask(0)
    try:
        with Library(db) as lib:
            with lib.transaction():
                lib.conn.execute("UPDATE meta SET value = value WHERE key = 'revision'")
            for side in ("-wal", "-shm"):
                assert mode(Path(str(db) + side)) == 0o600, side
    finally:
        os.umask(old)
    # the daemon's log (the daemon inherits umask 0)
    d = Daemon(home)
    old = os.umask(0)
    try:
        d.start()
    finally:
        os.umask(old)
    try:
        assert mode(p.log_file) == 0o600
    finally:
        d.stop()


def paths_for(home: Path):
    from tests.test_rpc import home_paths

    return home_paths(home)


def test_loose_modes_are_tightened_when_opened(scanned, deejai_home):
    home = copy_home(scanned, deejai_home)
    p = paths()
    db = p.library_file
    p.data_dir.chmod(0o755)
    db.chmod(0o644)
    p.state_dir.mkdir(parents=True, exist_ok=True)
    p.state_dir.chmod(0o755)
    p.log_file.write_text("old log\n")
    p.log_file.chmod(0o644)
    r = deejai("status", home=home)
    assert r.returncode == 0, r.stderr
    assert mode(p.data_dir) == mode(p.state_dir) == 0o700
    assert mode(db) == 0o600
    from deejai.ui_cli.daemon import configure_logging

    configure_logging(p.log_file, to_stderr=False, debug=False)
    try:
        assert mode(p.log_file) == 0o600
    finally:
        import logging

        for h in list(logging.getLogger("deejai").handlers):
            h.close()
            logging.getLogger("deejai").removeHandler(h)


def test_rotated_logs_are_born_private(tmp_path):
    import logging

    from deejai.engine._fs import PrivateRotatingFileHandler

    old = os.umask(0)
    try:
        handler = PrivateRotatingFileHandler(tmp_path / "deejai.log", maxBytes=200,
                                             backupCount=2, encoding="utf-8")
        log = logging.getLogger("deejai.test-rotation")
        log.addHandler(handler)
        log.propagate = False
        for i in range(30):
            log.warning("line %d of a log that rotates: %s", i, "x" * 40)
        handler.close()
        log.removeHandler(handler)
    finally:
        os.umask(old)
    logs = sorted(tmp_path.glob("deejai.log*"))
    assert len(logs) == 3
    for f in logs:
        assert mode(f) == 0o600, f
