"""Scans on a real Dask cluster: a LocalCluster of worker processes on the loopback, real
``dask scheduler`` / ``dask worker`` processes, real kills.

One LocalCluster (2 worker processes, 1 thread each) serves the module; the tests that need
a scheduler they can kill, or workers with another model, start their own processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")  # the dask extra (in the test extra too)
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from deejai.engine.cluster import ClusterExecutor, _loads, is_address, mismatch  # noqa: E402
from deejai.engine.errors import (  # noqa: E402
    ClusterError,
    ClusterMismatchError,
    ConfigError,
)
from deejai.engine.library import Library  # noqa: E402
from deejai.engine.scan import scan  # noqa: E402
from deejai.models import DEFAULT_MODEL, MODELS_DIR  # noqa: E402
from tests.audiogen import make_library  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_FILES = 8


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """A DEEJAI_HOME for the module's cluster and reference scan (never the user's)."""
    home = tmp_path_factory.mktemp("cluster-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEJAI_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music")
    make_library(root, n=N_FILES, seconds=6.0)
    return root


@pytest.fixture(scope="module")
def cluster(module_home):
    """A real LocalCluster: 2 worker processes (nannies restart a killed one), loopback."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as c:
        yield c


@pytest.fixture
def client(cluster):
    """The test's own client, with both workers up (a test before may have killed one)."""
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def rows(db: Path) -> dict[str, dict]:
    """path -> the track row with its vector, intro and outro (float32 arrays)."""
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    out = {}
    for r in con.execute("SELECT t.*, v.vector AS v, v.intro AS vi, v.outro AS vo, "
                         "v.model AS vmodel FROM tracks t LEFT JOIN vectors v ON v.track_id = t.id"):
        d = dict(r)
        for k in ("v", "vi", "vo"):
            d[k] = None if d[k] is None else np.frombuffer(d[k], dtype="<f4")
        out[d["path"]] = d
    con.close()
    return out


@pytest.fixture(scope="module")
def reference(module_home, music, tmp_path_factory) -> dict[str, dict]:
    """The library of ``music`` scanned by the local worker pool."""
    db = tmp_path_factory.mktemp("reference") / "library.sqlite"
    with Library(db) as lib:
        s = scan(lib, [music], workers=2, update_index=False)
    assert s.added == N_FILES and s.errors == 0
    return rows(db)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_same_as(reference: dict, got: dict, *, only_ok: bool = True) -> None:
    """Every track of ``got`` equals the local pool's: same file facts, tags, vectors."""
    for path, r in got.items():
        if only_ok and r["status"] != "ok":
            continue
        ref = reference[path]
        for key in ("size", "mtime_ns", "audio_hash", "artist", "title", "album", "tracknumber"):
            assert r[key] == ref[key], (path, key)
        assert r["duration_s"] == pytest.approx(ref["duration_s"], abs=1e-3)
        assert r["vmodel"] == ref["vmodel"] == DEFAULT_MODEL
        for key in ("v", "vi", "vo"):
            assert cosine(r[key], ref[key]) >= 0.9999, (path, key)


def cluster_scan(address: str, db: Path, music: Path, *, ship_audio: bool = False, **kw):
    """Scan ``music`` into the library ``db`` on the cluster at ``address``; the summary."""
    ex = ClusterExecutor(address, ship_audio=ship_audio)
    try:
        with Library(db) as lib:
            return scan(lib, [music], executor=ex, update_index=False, **kw)
    finally:
        ex.shutdown()


class KillOnce(WorkerPlugin):
    """Kills its worker process with SIGKILL the moment a scan task starts executing there;
    once in the whole cluster (the worker that creates ``marker`` does it)."""

    name = "test-kill-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing" or not str(key).startswith("deejai-analyse"):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _set_allowed_failures(n: int, dask_scheduler=None) -> int:
    old = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = n
    return old


def _scan_tasks(dask_scheduler=None) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith("deejai-analyse")]


# ------------------------------------------------------------------------------ no cluster


def test_addresses_and_mismatch_phrases():
    assert is_address("tcp://10.0.0.2:8786") and is_address("tls://host:8786")
    assert is_address("musicbox:8786")
    assert not is_address("local") and not is_address("process") and not is_address("foo")
    here = {"deejai": "0.1.0", "model": "m", "variant": "int8", "sha256": "a" * 64}
    assert mismatch(here, dict(here)) is None
    assert mismatch(here, {**here, "deejai": "0.2.0"}) == "deejai 0.2.0 (here 0.1.0)"
    why = mismatch(here, {**here, "sha256": "b" * 64})
    assert why == f"model file sha256 {'b' * 12}… (here {'a' * 12}…)"
    assert mismatch(here, {"error": "cannot load the model"}) == "cannot load the model"


def test_unreachable_scheduler_is_one_line_with_the_address(free_port):
    address = f"tcp://127.0.0.1:{free_port}"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        ClusterExecutor(address, connect_timeout_s=1)
    text = str(info.value)
    assert address in text and "\n" not in text and "dask scheduler" in text
    assert time.monotonic() - t0 < 60  # it gave up; the limit is generous on a busy machine


def test_dask_security_settings_are_checked_before_connecting():
    import dask

    with dask.config.set({"distributed.comm.require-encryption": True}):
        with pytest.raises(ConfigError, match="requires encryption: use a tls:// address"):
            ClusterExecutor("tcp://127.0.0.1:1", connect_timeout_s=1)
    with pytest.raises(ConfigError, match="needs Dask's TLS settings for the client"):
        ClusterExecutor("tls://127.0.0.1:1", connect_timeout_s=1)


def test_engine_rejects_an_executor_that_is_no_address(tmp_path, music):
    from deejai.engine.service import Engine

    eng = Engine()
    try:
        with pytest.raises(ConfigError, match="Dask scheduler address"):
            eng.scan(paths=[str(music)], executor="bogus")
    finally:
        eng.close()


def test_cli_unreachable_scheduler(tmp_path, music, free_port, deejai_home):
    address = f"tcp://127.0.0.1:{free_port}"
    env = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO),
           "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    r = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "scan", "--executor",
                        address, str(music)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("deejai:")]
    assert len(errors) == 1 and address in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    with Library(deejai_home / "data" / "library.sqlite") as lib:
        assert lib.stats()["tracks"] == 0


# ------------------------------------------------------------------------------ the cluster


def test_cluster_scan_equals_the_local_pool_and_loads_the_model_once(client, cluster, music,
                                                                     reference, tmp_path):
    ex = ClusterExecutor(cluster.scheduler_address)
    try:
        assert sorted(ex.workers) == sorted(client.scheduler_info()["workers"])
        assert all(w == ex.expected for w in ex.workers.values())
        assert ex.expected["model"] == DEFAULT_MODEL
        progress = []
        with Library(tmp_path / "cluster.sqlite") as lib:
            s = scan(lib, [music], executor=ex, update_index=False,
                     on_progress=lambda *a: progress.append(a))
        assert (s.added, s.errors, s.cancelled) == (N_FILES, 0, False)
        assert progress[-1][:3] == (N_FILES, N_FILES, 0)
        got = rows(tmp_path / "cluster.sqlite")
        assert set(got) == set(reference)
        assert_same_as(reference, got)
        # one interpreter per worker process, loaded by the plugin, for 8 tasks
        assert client.run(_loads) == {w: 1 for w in ex.workers}
        # a rescan finds nothing to do and submits nothing
        with Library(tmp_path / "cluster.sqlite") as lib:
            again = scan(lib, [music], executor=ex, update_index=False)
        assert (again.added, again.unchanged) == (0, N_FILES)
    finally:
        ex.shutdown()
    # the plugin is gone with the executor: the workers freed the model
    assert client.run(_loads) == {w: 0 for w in ex.workers}


def test_ship_audio_gives_the_same_library(client, cluster, music, reference, tmp_path):
    s = cluster_scan(cluster.scheduler_address, tmp_path / "shipped.sqlite", music,
                     ship_audio=True)
    assert (s.added, s.errors) == (N_FILES, 0)
    got = rows(tmp_path / "shipped.sqlite")
    assert set(got) == set(reference)  # the paths of this machine, not the workers' copies
    assert_same_as(reference, got)


def test_submit_of_the_scans_task_goes_through_the_checks(client, cluster, music, reference):
    """executor.submit(analyse_file, ...) (a scan's retry) is shipped and checked too."""
    from deejai.engine.scan import analyse_file

    path = sorted(reference)[0]
    ex = ClusterExecutor(cluster.scheduler_address, ship_audio=True)
    try:
        a = ex.submit(analyse_file, path, DEFAULT_MODEL, None).result(timeout=120)
        with pytest.raises(ValueError, match="analyses with"):
            ex.submit(analyse_file, path, "msd-musicnn", None)
        assert ex.submit(pow, 2, 10).result(timeout=120) == 1024  # anything else runs as is
    finally:
        ex.shutdown()
    assert a.path == path and a.audio_hash == reference[path]["audio_hash"]
    assert cosine(a.vector, reference[path]["v"]) >= 0.9999


def test_ship_audio_keeps_the_bytes_in_flight_bounded(client, cluster, music, reference,
                                                      tmp_path, monkeypatch):
    from deejai.engine import cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "SHIP_BUDGET_BYTES", 1)  # one file (over it) at a time
    ex = ClusterExecutor(cluster.scheduler_address, ship_audio=True)
    in_flight = []
    wait = ex._wait_for_room

    def watched(size):
        wait(size)
        in_flight.append(len(ex._shipped) + 1)

    ex._wait_for_room = watched
    try:
        with Library(tmp_path / "bounded.sqlite") as lib:
            s = scan(lib, [music], executor=ex, update_index=False)
    finally:
        ex.shutdown()
    assert (s.added, s.errors) == (N_FILES, 0)
    assert in_flight == [1] * N_FILES  # each waited for the one before to come back
    assert ex._shipped == {}
    assert_same_as(reference, rows(tmp_path / "bounded.sqlite"))


def test_a_worker_killed_mid_task_is_retried_elsewhere(client, cluster, music, reference,
                                                       tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(str(marker)))
    pids_before = set(client.run(os.getpid).values())
    try:
        s = cluster_scan(cluster.scheduler_address, tmp_path / "killed.sqlite", music)
    finally:
        client.unregister_worker_plugin(KillOnce.name)
    killed = int(marker.read_text())
    assert killed in pids_before
    assert not _alive(killed)
    assert (s.added, s.errors) == (N_FILES, 0)  # the scheduler ran its task on another worker
    assert_same_as(reference, rows(tmp_path / "killed.sqlite"))


def test_a_file_whose_workers_keep_dying_is_recorded_then_retried(client, cluster, music,
                                                                   reference, tmp_path):
    marker = tmp_path / "killed"
    old = client.run_on_scheduler(_set_allowed_failures, 0)  # no second try
    client.register_plugin(KillOnce(str(marker)))
    ex = ClusterExecutor(cluster.scheduler_address)
    try:
        with Library(tmp_path / "died.sqlite") as lib:
            s = scan(lib, [music], executor=ex, update_index=False)
            failed = lib.errors()
    finally:
        ex.shutdown()
        client.unregister_worker_plugin(KillOnce.name)
        client.run_on_scheduler(_set_allowed_failures, old)
    assert marker.exists()
    # the task the worker ran (and any queued behind it there) failed; the rest went on
    assert 1 <= s.errors <= 2 and s.added == N_FILES - s.errors
    assert len(failed) == s.errors
    assert all("1 Dask worker died while analysing this file" in e["error"] for e in failed), \
        failed
    assert s.retried == 0  # the scheduler's retries are the retries: none by the scan
    assert all(e["error_kind"] == "transient" for e in failed), failed
    assert_same_as(reference, rows(tmp_path / "died.sqlite"))
    client.wait_for_workers(2, timeout=120)
    # transient: the next scan analyses them again
    again = cluster_scan(cluster.scheduler_address, tmp_path / "died.sqlite", music)
    assert (again.updated, again.errors) == (s.errors, 0)
    got = rows(tmp_path / "died.sqlite")
    assert all(r["status"] == "ok" for r in got.values())
    assert_same_as(reference, got)


def test_cancel_cancels_the_tasks_and_commits_what_finished(client, cluster, music, reference,
                                                            tmp_path):
    done = [0]

    def on_progress(n, total, errors, rate, eta):
        done[0] = n

    ex = ClusterExecutor(cluster.scheduler_address)
    try:
        with Library(tmp_path / "cancel.sqlite") as lib:
            s = scan(lib, [music], executor=ex, update_index=False, on_progress=on_progress,
                     should_stop=lambda: done[0] >= 2)
    finally:
        ex.shutdown(cancel_futures=True)
    assert s.cancelled and 2 <= s.added < N_FILES
    got = rows(tmp_path / "cancel.sqlite")
    assert len(got) == s.added
    assert_same_as(reference, got)
    deadline = time.monotonic() + 60
    while client.run_on_scheduler(_scan_tasks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.run_on_scheduler(_scan_tasks) == []  # nothing left running on the cluster
    with Library(tmp_path / "cancel.sqlite") as lib:
        rest = scan(lib, [music], executor=None, workers=1, update_index=False)
    assert rest.added == N_FILES - s.added  # the next scan (here a local one) goes on


def test_cli_and_settings_scan_on_the_cluster(client, cluster, music, reference, deejai_home):
    env = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "scan", "--executor",
                        cluster.scheduler_address, str(music)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert f"analysing on the Dask cluster at {cluster.scheduler_address}" in r.stderr
    assert "scan finished" in r.stdout
    added = [line.split() for line in r.stdout.splitlines() if line.startswith("added")]
    assert added == [["added", str(N_FILES)]]
    db = deejai_home / "data" / "library.sqlite"
    assert_same_as(reference, rows(db))


def test_the_executor_setting_and_executor_local(tmp_path, music, free_port, deejai_home):
    """DEEJAI_EXECUTOR (the setting) sends scans to a cluster; --executor local overrides it."""
    address = f"tcp://127.0.0.1:{free_port}"  # nothing listens there
    env = {**os.environ, "DEEJAI_NO_DAEMON": "1", "PYTHONPATH": str(REPO),
           "DEEJAI_EXECUTOR": address, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    cmd = [sys.executable, "-m", "deejai.ui_cli.main", "scan", "--json", "-j", "1", str(music)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1 and f"cannot reach the Dask scheduler at {address}" in r.stderr
    r = subprocess.run([*cmd, "--executor", "local"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["added"] == N_FILES


# ------------------------------------------------------------------------------ processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of a nanny counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


#: Every process a test started; :func:`stop_started` kills what is left when it ends.
_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def stop_started():
    yield
    while _STARTED:
        stop(_STARTED.pop())


def _python(*args: str, cwd: Path, log: Path, user: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, *args]
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
               *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("wb"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    _STARTED.append(p)
    return p


def start_scheduler(tmp: Path, protocol: str = "tcp") -> tuple[subprocess.Popen, str]:
    """``dask scheduler`` on the loopback, on a free port; returns (process, address)."""
    info = tmp / "scheduler.json"
    p = _python("-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                "--protocol", protocol,
                "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                "--scheduler-file", str(info), cwd=tmp,
                log=tmp / "scheduler.log")
    deadline = time.monotonic() + 120
    while not info.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert info.exists(), (tmp / "scheduler.log").read_text()
    time.sleep(0.2)  # the file is written in one go, but give it a moment
    return p, json.loads(info.read_text())["address"]


def start_worker(address: str, cwd: Path, log: Path, user: str | None = None) -> subprocess.Popen:
    """One ``dask worker`` process (no nanny: its pid is the worker's) with one thread."""
    local = cwd / f"dask-{log.stem}"
    local.mkdir(exist_ok=True)
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        os.chown(local, pw.pw_uid, pw.pw_gid)
    return _python("-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                   "--no-nanny", "--no-dashboard", "--local-directory", str(local),
                   "--name", log.stem, cwd=cwd, log=log, user=user)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=30)


def wait_workers(address: str, names: set[str], timeout: float = 120) -> None:
    with distributed.Client(address, set_as_default=False) as c:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            have = {w.get("name") for w in c.scheduler_info()["workers"].values()}
            if names <= {str(n) for n in have}:
                return
            time.sleep(0.2)
    raise AssertionError(f"workers {names} did not join {address}")


def test_scheduler_lost_mid_scan_commits_what_finished_and_the_next_scan_resumes(
        module_home, music, reference, tmp_path):
    sched, address = start_scheduler(tmp_path)
    worker = start_worker(address, tmp_path, tmp_path / "w1.log")
    try:
        wait_workers(address, {"w1"})
        ex = ClusterExecutor(address)
        killed = []

        def on_progress(done, total, errors, rate, eta):
            if done >= 3 and not killed:
                os.kill(sched.pid, signal.SIGKILL)
                killed.append(done)

        try:
            with Library(tmp_path / "lost.sqlite") as lib:
                with pytest.raises(ClusterError) as info:
                    scan(lib, [music], executor=ex, update_index=False, on_progress=on_progress)
        finally:
            ex.shutdown(cancel_futures=True)
        assert killed and address in str(info.value) and "\n" not in str(info.value)
        got = rows(tmp_path / "lost.sqlite")
        assert killed[0] <= len(got) < N_FILES  # what finished before the loss is committed
        assert_same_as(reference, got)
    finally:
        stop(sched)
        stop(worker)
    with Library(tmp_path / "lost.sqlite") as lib:
        rest = scan(lib, [music], workers=1, update_index=False)
    assert rest.added == N_FILES - len(got) and rest.errors == 0


@pytest.fixture
def two_models(tmp_path, monkeypatch):
    """``./mymodel`` is the default model here (cwd ``here``) and, in ``there``, a folder
    under the same name whose int8 file is another one (the fp32 file): two machines with
    different model files under one name."""
    src = MODELS_DIR / DEFAULT_MODEL
    here, there = tmp_path / "here", tmp_path / "there"
    for root in (here, there):
        (root / "mymodel").mkdir(parents=True)
        for f in src.iterdir():
            if f.suffix == ".tflite":
                os.symlink(f, root / "mymodel" / f.name)
    card = json.loads((src / "card.json").read_text())
    (here / "mymodel" / "card.json").write_text(json.dumps(card))
    other = json.loads(json.dumps(card))
    other["variants"]["int8"] = dict(card["variants"]["fp32"])
    (there / "mymodel" / "card.json").write_text(json.dumps(other))
    monkeypatch.chdir(here)
    return here, there


def test_a_worker_with_another_model_is_found_at_the_start(module_home, two_models, tmp_path):
    here, there = two_models
    sched, address = start_scheduler(tmp_path)
    worker = start_worker(address, there, tmp_path / "other.log")
    try:
        wait_workers(address, {"other"})
        with pytest.raises(ClusterMismatchError) as info:
            ClusterExecutor(address, model="./mymodel", variant="int8")
        text = str(info.value)
        assert "worker tcp://127.0.0.1:" in text and "model file sha256" in text, text
        assert "\n" not in text
    finally:
        stop(sched)
        stop(worker)


def test_a_worker_with_another_model_that_joins_later_stops_the_scan(
        module_home, two_models, music, reference, tmp_path):
    here, there = two_models
    sched, address = start_scheduler(tmp_path)
    good = start_worker(address, here, tmp_path / "good.log")
    workers = [good]
    try:
        wait_workers(address, {"good"})
        ex = ClusterExecutor(address, model="./mymodel", variant="int8")

        def on_plan(plan):  # after the start-up check, before the first file
            workers.append(start_worker(address, there, tmp_path / "late.log"))
            wait_workers(address, {"good", "late"})

        try:
            with Library(tmp_path / "mixed.sqlite") as lib:
                with pytest.raises(ClusterMismatchError) as info:
                    scan(lib, [music], executor=ex, model="./mymodel", update_index=False,
                         on_plan=on_plan)
        finally:
            ex.shutdown(cancel_futures=True)
        assert "model file sha256" in str(info.value)
        got = rows(tmp_path / "mixed.sqlite")
        assert len(got) < N_FILES
        assert_same_as(reference, got)  # only vectors of this machine's model were stored
    finally:
        stop(sched)
        for w in workers:
            stop(w)


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA of its own and one certificate (127.0.0.1) signed by it, with openssl."""
    run = lambda *a: subprocess.run(["openssl", *a], cwd=folder, check=True,  # noqa: E731
                                    capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out",
        "ca.pem", "-days", "2", "-subj", "/CN=deejai test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr",
        "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    conf = {"distributed.comm.require-encryption": True,
            "distributed.comm.tls.ca-file": str(folder / "ca.pem")}
    for role in ("scheduler", "worker", "client"):
        conf[f"distributed.comm.tls.{role}.cert"] = str(folder / "cert.pem")
        conf[f"distributed.comm.tls.{role}.key"] = str(folder / "key.pem")
    return conf


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_a_tls_cluster_with_dask_own_settings(module_home, music, reference, tmp_path,
                                              monkeypatch):
    """docs/cluster.md's TLS set-up: the scheduler, the worker and deejai's client read the
    same Dask settings (here as DASK_* variables) and scan over tls://."""
    import dask

    conf = make_certificates(tmp_path)
    for key, value in conf.items():
        monkeypatch.setenv("DASK_" + key.upper().replace(".", "__").replace("-", "_"), str(value))
    sched, address = start_scheduler(tmp_path, protocol="tls")
    worker = start_worker(address, tmp_path, tmp_path / "tls.log")
    try:
        assert address.startswith("tls://")
        with dask.config.set(conf):
            wait_workers(address, {"tls"})
            s = cluster_scan(address, tmp_path / "tls.sqlite", music)
        assert (s.added, s.errors) == (N_FILES, 0)
        assert_same_as(reference, rows(tmp_path / "tls.sqlite"))
    finally:
        stop(sched)
        stop(worker)


@pytest.fixture
def open_tmp():
    """A folder another user can enter (pytest's own are private to this user)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="deejai-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a worker as another user")
def test_workers_without_the_files_need_ship_audio(module_home, music, reference, open_tmp):
    """A worker running as another user cannot read a private folder, like a worker on a
    machine that does not share the filesystem: the scan says so at its first file, and
    --ship-audio scans the folder."""
    probe = _python("-c", "import deejai.engine.cluster", cwd=open_tmp,
                    log=open_tmp / "probe.log", user="nobody")
    if probe.wait(timeout=120) != 0:
        pytest.skip("user nobody cannot run this Python or read deejai here: "
                    + (open_tmp / "probe.log").read_text()[-300:])
    private = open_tmp / "private"
    shutil.copytree(music, private / "music")  # copy2: sizes and mtimes as the originals
    os.chmod(private, 0o700)
    sched, address = start_scheduler(open_tmp)
    worker = start_worker(address, open_tmp, open_tmp / "nobody.log", user="nobody")
    try:
        wait_workers(address, {"nobody"})
        ex = ClusterExecutor(address)
        try:
            with Library(open_tmp / "a.sqlite") as lib:
                with pytest.raises(ClusterError) as info:
                    scan(lib, [private / "music"], executor=ex, update_index=False)
        finally:
            ex.shutdown(cancel_futures=True)
        text = str(info.value)
        assert "worker tcp://127.0.0.1:" in text and "Permission denied" in text, text
        assert "--ship-audio" in text
        assert rows(open_tmp / "a.sqlite") == {}
        s = cluster_scan(address, open_tmp / "b.sqlite", private / "music", ship_audio=True)
        assert (s.added, s.errors) == (N_FILES, 0)
        got = rows(open_tmp / "b.sqlite")
        assert all(p.startswith(str(private)) for p in got)
        assert_same_as(reference, {str(music / Path(p).relative_to(private / "music")): r
                                   for p, r in got.items()})
    finally:
        stop(sched)
        stop(worker)

