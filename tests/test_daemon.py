"""The daemon as a process: files and modes, one per library, signals, ``deejai stop``, TCP with
a token on loopback only, systemd socket activation, and a scan that survives ``kill -9``."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from deejai.engine.errors import DaemonError, UnauthorisedError
from deejai.engine.rpc import Client, read_daemon_info
from tests.audiogen import make_library
from tests.test_rpc import Raw, assert_error, home_paths, start_daemon


def run_cli(home: Path, *args: str, timeout: float = 60.0, env: dict | None = None):
    e = dict(os.environ, DEEJAI_HOME=str(home), DEEJAI_NO_DAEMON="")
    e.pop("DEEJAI_SOCKET", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", *args], env=e,
                          capture_output=True, text=True, timeout=timeout)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------------------ files, modes
def test_socket_folder_and_lock_modes(deejai_home, daemons):
    d = start_daemon(daemons, deejai_home)
    sock = d.paths.socket_file
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert mode(sock) == 0o600
    assert mode(sock.parent) == 0o700
    assert mode(d.paths.data_dir / "daemon.lock") == 0o600
    info = read_daemon_info(d.paths)
    assert info["pid"] == d.proc.pid and info["socket"] == str(sock) and info["tcp"] is None
    assert not (d.paths.runtime_dir / "deejai.token").exists()  # no TCP, no token
    assert "listening on" in d.paths.log_file.read_text()


def test_second_daemon_exits_1(deejai_home, daemons):
    d = start_daemon(daemons, deejai_home)
    for extra in ([], ["--socket", str(deejai_home / "other.sock")]):
        res = run_cli(deejai_home, "serve", *extra)
        assert res.returncode == 1, res.stderr
        assert f"a daemon is already running (pid {d.proc.pid}, socket {d.socket})" in res.stderr
        assert "Traceback" not in res.stderr
    assert d.alive()
    assert not (deejai_home / "other.sock").exists()
    with d.client() as c:
        assert c.ping()["pid"] == d.proc.pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(deejai_home, daemons, sig):
    d = start_daemon(daemons, deejai_home)
    with Raw(d.socket) as idle:  # a connected client does not hold the daemon up
        idle.ping()
        d.proc.send_signal(sig)
        assert d.wait(30) == 0, d.stderr()
        assert idle.read() is None  # the daemon closed the connection
    assert not d.paths.socket_file.exists()
    assert read_daemon_info(d.paths) is None  # lock released and emptied
    assert "daemon stopped" in d.paths.log_file.read_text()
    # and the library can be served again at once
    d2 = start_daemon(daemons, deejai_home)
    assert d2.client().ping()["pid"] == d2.proc.pid


def test_stop_command(deejai_home, daemons):
    d = start_daemon(daemons, deejai_home)
    res = run_cli(deejai_home, "stop")
    assert res.returncode == 0, res.stderr
    assert f"daemon (pid {d.proc.pid}) stopped" in res.stderr
    assert d.wait(30) == 0
    assert not d.paths.socket_file.exists()
    res = run_cli(deejai_home, "stop")
    assert res.returncode == 1
    assert "no deejai daemon answers" in res.stderr and "Traceback" not in res.stderr


def test_stale_socket_after_kill_9_is_replaced(deejai_home, daemons):
    d = start_daemon(daemons, deejai_home)
    d.proc.kill()
    d.wait(30)
    assert stat.S_ISSOCK(os.lstat(d.paths.socket_file).st_mode)  # left behind
    assert Client.connect_or_none(timeout=0.5) is None
    d2 = start_daemon(daemons, deejai_home)
    with Client.connect() as c:  # found at the default place
        assert c.ping()["pid"] == d2.proc.pid
    assert "removing stale socket" in d2.paths.log_file.read_text()


def test_socket_path_that_is_not_a_socket(deejai_home, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    res = run_cli(deejai_home, "serve", "--socket", str(target))
    assert res.returncode == 1
    assert "exists and is not a socket" in res.stderr
    assert target.read_text() == "keep me"
    assert read_daemon_info(home_paths(deejai_home)) is None  # the lock was released


def test_custom_socket_is_found_through_the_lock_file(deejai_home, daemons, tmp_path):
    path = tmp_path / "s" / "custom.sock"
    d = start_daemon(daemons, deejai_home, "--socket", str(path))
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    with Client.connect() as c:
        assert c.address == str(path)
        assert c.ping()["pid"] == d.proc.pid
    res = run_cli(deejai_home, "stop")
    assert res.returncode == 0, res.stderr
    assert not path.exists()


# ------------------------------------------------------------------------------ TCP
def test_tcp_needs_the_token_and_listens_on_loopback_only(deejai_home, daemons, monkeypatch):
    d = start_daemon(daemons, deejai_home, "--tcp", "127.0.0.1:0")
    info = d.info()
    address = info["tcp"]
    port = int(address.rsplit(":", 1)[1])
    assert address == f"tcp://127.0.0.1:{port}" and info["socket"] is None
    assert not d.paths.socket_file.exists()
    token_path = d.paths.runtime_dir / "deejai.token"
    assert mode(token_path) == 0o600
    token = token_path.read_text().strip()
    assert len(token) >= 32

    listening = [c for c in psutil.Process(d.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", port)]
    # the same from the kernel's table: local address 0100007F (127.0.0.1), state 0A (LISTEN)
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    ours = [r[1] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == port]
    assert ours == [f"0100007F:{port:04X}"]

    # no token: the first request is refused and the connection closed
    with Raw(address) as r:
        assert_error(r.ask({"jsonrpc": "2.0", "id": 1, "method": "engine.ping"}),
                     UnauthorisedError.code, 1)
        assert r.read() is None
    # wrong token
    with Raw(address) as r:
        err = assert_error(r.ask({"jsonrpc": "2.0", "id": 2, "method": "engine.auth",
                                  "params": {"token": token[:-1] + "x"}}),
                           UnauthorisedError.code, 2)
        assert "unauthorised" in err["message"]
        assert r.read() is None
    # garbage before auth
    with Raw(address) as r:
        assert_error(r.ask(b"{not json"), UnauthorisedError.code, None)
        assert r.read() is None
    # the right token, then requests in the same packet are served
    with Raw(address) as r:
        r.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "engine.auth",
                           "params": {"token": token}}) + "\n"
               + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "engine.ping"}) + "\n")
        assert r.read() == {"jsonrpc": "2.0", "id": 1, "result": True}
        assert r.read()["result"]["pid"] == d.proc.pid

    with pytest.raises(UnauthorisedError):
        Client.connect(address, token="wrong", timeout=5)
    monkeypatch.setenv("DEEJAI_SOCKET", address)
    monkeypatch.setenv("DEEJAI_TOKEN", "also-wrong")
    with pytest.raises(UnauthorisedError):
        Client.connect_or_none(timeout=5)  # a refused token is not "no daemon"
    monkeypatch.setenv("DEEJAI_TOKEN", token)
    with Client.connect(timeout=5) as c:
        assert c.ping()["pid"] == d.proc.pid
    # without DEEJAI_TOKEN the client reads the token file of its DEEJAI_HOME
    monkeypatch.delenv("DEEJAI_TOKEN")
    monkeypatch.delenv("DEEJAI_SOCKET")
    with Client.connect(timeout=5) as c:
        assert c.address == address

    d.proc.send_signal(signal.SIGTERM)
    assert d.wait(30) == 0
    assert not token_path.exists()


@pytest.mark.parametrize("addr", ["0.0.0.0:0", "192.0.2.1:6601", "[::]:0"])
def test_tcp_refuses_non_loopback_hosts(deejai_home, addr):
    res = run_cli(deejai_home, "serve", "--tcp", addr)
    assert res.returncode == 1
    assert "loopback" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------ systemd
def test_systemd_socket_activation(deejai_home, tmp_path):
    """The daemon serves a listening socket passed as fd 3 (LISTEN_FDS/LISTEN_PID)."""
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    launcher = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "os.dup2(fd, 3)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'deejai.ui_cli.main', 'serve'])\n"
    )
    env = dict(os.environ, DEEJAI_HOME=str(deejai_home))
    env.pop("DEEJAI_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(listener.fileno())],
                            pass_fds=(listener.fileno(),), env=env,
                            stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client.connect(str(path), timeout=2) as c:
                    assert c.ping()["pid"] == proc.pid
                break
            except DaemonError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert not home_paths(deejai_home).socket_file.exists()  # it bound nothing itself
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert path.exists()  # the socket belongs to systemd: left in place
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ scans
@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music")
    make_library(root, n=16, seconds=5.0)
    return root


def _count_tracks(home: Path) -> int:
    from deejai.engine.library import Library

    with Library(home_paths(home).library_file) as lib:
        return int(lib.stats()["tracks"])


def test_scan_events_and_playlists_over_the_socket(deejai_home, daemons, music):
    d = start_daemon(daemons, deejai_home)
    with d.client() as c, d.client() as watcher:
        seen: list[tuple[str, dict]] = []
        unsubscribe = watcher.subscribe(lambda e, p: seen.append((e, p)))
        stream = c.events(timeout=120)  # subscribed from here on
        job = c.scan(paths=[str(music)], workers=1)["job"]
        events = []
        for event, params in stream:
            events.append((event, params))
            if event == "scan.finished":
                break
        # queries keep answering while the scan runs (the Engine calls run in threads)
        assert c.ping()["pong"]
        progress = [p for e, p in events if e == "scan.progress"]
        finished = [p for e, p in events if e == "scan.finished"]
        assert progress and finished
        assert all(p["job"] == job for p in progress)
        assert progress[-1]["done"] == progress[-1]["total"] == 16
        assert finished[0]["job"] == job and finished[0]["state"] == "finished"
        assert finished[0]["summary"]["added"] == 16
        assert c.scan_status(job)["state"] == "finished"
        assert c.wait_scan(job, timeout=5)["state"] == "finished"
        deadline = time.monotonic() + 10
        while not any(e == "scan.finished" for e, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("scan.finished", finished[0]) in seen
        unsubscribe()

        tracks = c.tracks(limit=None)
        assert len(tracks) == 16
        first, last = tracks[0]["id"], tracks[-1]["id"]
        playlist = c.join(waypoints=[first, last], n=4)
        ids = [e["id"] for e in playlist["entries"]]
        assert len(ids) == 6 and ids[0] == first and ids[-1] == last
        assert len(set(ids)) == 6
        radio = c.radio(seeds=[first], n=5)
        assert len(radio["entries"]) == 5
        exported = c.export(playlist, format="m3u8")
        assert exported["format"] == "m3u8"
        assert tracks[0]["path"] in exported["content"]
        status = c.status()
        assert status["tracks"] == 16 and status["scan"]["job"] == job


@pytest.mark.slow
def test_kill_9_during_a_scan_then_serve_again(deejai_home, daemons, music, tmp_path):
    # a bigger library so that the scan is still running when the first batch is committed
    big = tmp_path / "big"
    make_library(big, n=100, seconds=4.0)  # a batch is 32 files: the scan goes on after it
    d = start_daemon(daemons, deejai_home)
    with d.client() as c:
        job = c.scan(paths=[str(big)], workers=1)["job"]
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline, "no batch committed"
            status = c.scan_status(job)
            assert status["state"] == "running", status
            if _count_tracks(deejai_home) > 0:
                break
            time.sleep(0.1)
    workers = psutil.Process(d.proc.pid).children(recursive=True)
    d.proc.kill()
    d.wait(30)
    committed = _count_tracks(deejai_home)
    assert 0 < committed < 100
    # the pool workers of the dead daemon go away on their own
    gone, alive = psutil.wait_procs(workers, timeout=30)
    for p in alive:  # pragma: no cover - reported by the assert below
        p.kill()
    assert alive == []

    d2 = start_daemon(daemons, deejai_home)
    assert "removing stale socket" in d2.paths.log_file.read_text()
    from deejai.engine.library import Library

    with Library(d2.paths.library_file) as lib:
        assert lib.integrity_check() == "ok"
    with d2.client() as c:
        assert c.scan_status()["state"] == "idle"  # a new daemon knows no jobs
        job = c.scan(paths=[str(big)], workers=1)["job"]
        status = c.wait_scan(job, timeout=300)
        assert status["state"] == "finished", status
        summary = status["summary"]
        assert summary["unchanged"] >= committed  # it resumed, not restarted
        assert summary["added"] + summary["unchanged"] == 100
        assert c.status()["tracks"] == 100


def test_sigterm_during_a_scan_commits_and_exits(deejai_home, daemons, music):
    d = start_daemon(daemons, deejai_home)
    with d.client() as c:
        stream = c.events(timeout=120)
        job = c.scan(paths=[str(music)], workers=1)["job"]
        for event, params in stream:
            if event == "scan.progress" and params["done"] >= 1:
                break
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait(60) == 0, d.stderr()
    assert not d.paths.socket_file.exists()
    from deejai.engine.library import Library

    with Library(d.paths.library_file) as lib:
        assert lib.integrity_check() == "ok"
        assert lib.stats()["tracks"] >= 1
    assert job


def test_stopping_the_daemon_mid_scan_ends_the_scanning_cli_with_a_clear_line(
        deejai_home, daemons, tmp_path):
    """`deejai scan` follows a scan in the daemon; `deejai stop` mid-scan: the scan command
    says the scan was stopped and how many tracks were kept, exits 3, and `deejai status`
    says the last scan was cancelled."""
    from deejai.ui_cli.library import EXIT_SCAN_STOPPED

    music = tmp_path / "many"
    make_library(music, n=80, seconds=3.0)  # still scanning when the stop comes
    d = start_daemon(daemons, deejai_home)
    env = dict(os.environ, DEEJAI_HOME=str(deejai_home), DEEJAI_NO_DAEMON="", COLUMNS="200")
    env.pop("DEEJAI_SOCKET", None)
    scanning = subprocess.Popen([sys.executable, "-m", "deejai.ui_cli.main", "scan", "-j", "1",
                                 str(music)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        with d.client() as c:
            deadline = time.monotonic() + 120
            while True:
                st = c.scan_status()
                if st.get("state") == "running" and int(st.get("done") or 0) >= 2:
                    break
                assert st.get("state") in ("running", "idle"), st
                assert time.monotonic() < deadline, "the scan never got going"
                time.sleep(0.1)
        stop = run_cli(deejai_home, "stop", timeout=120)
        assert stop.returncode == 0, stop.stderr
        out, err = scanning.communicate(timeout=120)
    finally:
        if scanning.poll() is None:
            scanning.kill()
            scanning.wait()
    assert scanning.returncode == EXIT_SCAN_STOPPED == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("the scan was stopped: the daemon went away before it finished; ")
    kept = int(last.split("; ")[1].split()[0])
    assert 1 <= kept < 80 and kept == _count_tracks(deejai_home)
    assert "Traceback" not in err and "connection" not in last
    status = run_cli(deejai_home, "status", env={"DEEJAI_NO_DAEMON": "1", "COLUMNS": "200"})
    assert "cancelled before it finished" in status.stdout, status.stdout
