"""The daemon under a hostile client (issue 14, the daemon): nobody is locked out, every
request line is answered once with valid JSON, one client cannot stall the others, bad values
get a clear -32602, scans cannot start a process per file, systemd's TCP socket gets the
``--tcp`` rules, and the MPD password goes only where it belongs.

Real ``deejai serve`` processes, real Unix and TCP sockets, a real Debian ``mpd``.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deejai.engine.errors import AuthenticationFailed, InvalidParamsError
from deejai.engine.rpc import (
    INVALID_PARAMS,
    MAX_UNAUTHENTICATED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Client,
)
from tests.conftest import free_tcp_port
from tests.test_rpc import Daemon, Raw, assert_error, start_daemon

AUTH_ERROR = AuthenticationFailed.code


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(raw: bytes):
    """Parse one reply line as a strict JSON reader would: UTF-8, no NaN/Infinity."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def read_raw(r: Raw) -> bytes:
    """The next reply line as bytes (b"" at the end of the stream)."""
    return r.file.readline()


def auth_line(token: str, rid: object = 1) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "engine.auth", "params": {"token": token}}


@pytest.fixture(scope="module")
def unix_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("faults-unix")).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def tcp_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("faults-tcp"), "--tcp", "127.0.0.1:0").start()
    yield d
    d.stop()


# ============================================================================ 5. unauthenticated
def test_idle_unauthenticated_peers_do_not_take_the_owners_slots(tcp_daemon):
    """300 token-less connections that send nothing: the owner still gets in (it got -32060
    "too many connections"), and the oldest idle peers are the ones closed."""
    address, token = tcp_daemon.info()["tcp"], tcp_daemon.token()
    idle = [Raw(address, timeout=10) for _ in range(300)]
    try:
        with Client.connect(address, token=token, timeout=10) as owner:
            assert owner.ping()["pid"] == tcp_daemon.proc.pid
            assert owner.status()["tracks"] == 0
        # the daemon keeps at most MAX_UNAUTHENTICATED of them waiting; the others were told
        # why and closed (oldest first), not left holding a slot
        closed, deadline = 0, time.monotonic() + 20
        pending = list(idle)
        while pending and time.monotonic() < deadline and closed < 300 - MAX_UNAUTHENTICATED:
            ready, _, _ = select.select([r.sock for r in pending], [], [], 1.0)
            for r in [r for r in pending if r.sock in ready]:
                reply = r.read()
                if reply is not None:
                    assert_error(reply, AUTH_ERROR)
                    assert "waiting to authenticate" in reply["error"]["message"]
                    assert r.read() is None
                closed += 1
                pending.remove(r)
        assert closed >= 300 - MAX_UNAUTHENTICATED
        assert idle[0] not in pending  # the first one in was the first one out
    finally:
        for r in idle:
            r.close()
    assert tcp_daemon.alive()


def test_unauthenticated_peers_cannot_fill_the_daemons_memory(tcp_daemon):
    """250 token-less peers that each try to send 4 MiB without a newline: the daemon reads a
    few KiB of each, answers -32061 and closes. Before the fix it kept about 0.9 MB of every
    peer (a line up to the size limit): 224 MB more here with these peers, 43 -> 287 MB in
    the issue; now it grows by 1-7 MB.

    Each send blocks until the daemon has read or refused the bytes, so the peers come one
    after the other: with 1 MiB each, which the kernel takes without waiting, the daemon's RSS
    after the burst varied between 8 and 45 MB over runs (what asyncio read ahead for the
    peers is freed, but the allocator keeps part of it), too close to the defect to tell them
    apart."""
    address, token = tcp_daemon.info()["tcp"], tcp_daemon.token()
    daemon = psutil.Process(tcp_daemon.proc.pid)
    rss_before = daemon.memory_info().rss
    blob = b"x" * (4 << 20)
    peers = []
    try:
        for _ in range(250):
            r = Raw(address, timeout=10)
            peers.append(r)
            try:
                r.send(blob)
            except OSError:  # the daemon closed the connection while we were sending
                pass
        rss_after = daemon.memory_info().rss
        with Client.connect(address, token=token, timeout=10) as owner:
            assert owner.ping()["pid"] == tcp_daemon.proc.pid
    finally:
        for r in peers:
            r.close()
    grown_mb = (rss_after - rss_before) / 2**20
    assert grown_mb < 64, f"the daemon grew by {grown_mb:.0f} MB"
    assert tcp_daemon.alive()


def test_an_overlong_first_line_is_refused_before_the_token_is_read(deejai_home, daemons):
    # its own daemon: the other tests spent this peer's budget of answered failures
    address = start_daemon(daemons, deejai_home, "--tcp", "127.0.0.1:0").info()["tcp"]
    with Raw(address) as r:
        r.send(b'{"jsonrpc":"2.0","id":1,"method":"engine.auth","params":{"token":"'
               + b"t" * 100_000)
        err = assert_error(r.read(), AUTH_ERROR)
        assert "bytes" in err["message"]
        assert r.read() is None


def _log_lines(d: Daemon, pattern: str) -> list[str]:
    logs = sorted(d.paths.state_dir.glob("deejai.log*"))
    text = "".join(p.read_text(errors="replace") for p in logs)
    return [line for line in text.splitlines() if re.search(pattern, line)]


def test_failed_authentications_are_rate_limited_and_logged_once(deejai_home, daemons):
    """500 wrong tokens in a row: a few are answered, the rest are dropped unanswered; the log
    gets one summary line, not 500; and the right token is accepted throughout."""
    d = start_daemon(daemons, deejai_home, "--tcp", "127.0.0.1:0")
    address, token = d.info()["tcp"], d.token()
    from deejai.engine.rpc.connection import AUTH_FAILURE_BURST, AUTH_FAILURES_PER_S

    answered = dropped = 0
    t0 = time.monotonic()
    for i in range(500):
        with Raw(address, timeout=10) as r:
            try:
                reply = r.ask(auth_line("wrong-" + str(i), i))
            except OSError:
                reply = None
            if reply is None:
                dropped += 1
            else:
                assert_error(reply, AUTH_ERROR, i)
                answered += 1
        if i % 100 == 50:  # the owner is never locked out by someone else's failures
            with Raw(address) as owner:
                assert owner.ask(auth_line(token, "me")) == {"jsonrpc": "2.0", "id": "me",
                                                             "result": True}
                owner.ping()
    elapsed = time.monotonic() - t0
    # a burst, then the refill rate: the rest of the 500 were closed unanswered
    assert 1 <= answered <= AUTH_FAILURE_BURST + AUTH_FAILURES_PER_S * elapsed + 1, answered
    assert dropped == 500 - answered
    d.stop()  # the summary of what is still counted is logged at shutdown
    lines = _log_lines(d, r"authentica|unauthorised")
    assert 1 <= len(lines) <= 2 + elapsed / 60, lines  # the first, then one a minute
    counted = [int(m.group(1)) for line in lines
               if (m := re.search(r"(\d+) failed authentications? from 127\.0\.0\.1", line))]
    assert 1 + sum(counted) == 500, lines  # every failure is counted, none logged alone


def test_engine_auth_as_a_notification_gets_no_reply(tcp_daemon, unix_daemon):
    address, token = tcp_daemon.info()["tcp"], tcp_daemon.token()
    with Raw(address) as r:  # the right token, as a notification: accepted in silence
        r.line({"jsonrpc": "2.0", "method": "engine.auth", "params": {"token": token}})
        r.ping("after")  # the first reply read is this one
    with Raw(address) as r:  # a wrong one: closed, nothing sent
        r.line({"jsonrpc": "2.0", "method": "engine.auth", "params": {"token": "nope"}})
        assert r.read() is None
    with Raw(unix_daemon.socket) as r:
        r.line({"jsonrpc": "2.0", "method": "engine.auth", "params": {"token": "x"}})
        r.ping("after")


# ============================================================================ 6. one valid reply
@pytest.mark.parametrize("line, rid, code", [
    (rb'{"jsonrpc":"2.0","id":"\ud800","method":"engine.ping"}', "\ud800", None),
    (rb'{"jsonrpc":"2.0","id":"a\udfffb","method":"engine.ping"}', "a\udfffb", None),
    (rb'{"jsonrpc":"2.0","id":1,"method":"\ud800"}', 1, METHOD_NOT_FOUND),
    (rb'{"jsonrpc":"2.0","id":2,"method":"library.track","params":{"track":"\udc80"}}', 2,
     None),
])
def test_lone_surrogates_get_one_valid_reply(unix_daemon, line, rid, code):
    with Raw(unix_daemon.socket) as r:
        r.line(line)
        reply = strict_json(read_raw(r))
        assert reply["id"] == rid
        if code is None:
            assert ("result" in reply) != ("error" in reply)
        else:
            assert reply["error"]["code"] == code
        r.ping()
    assert unix_daemon.alive()


@pytest.mark.parametrize("line", [
    b'{"jsonrpc":"2.0","id":1e999,"method":"engine.ping"}',
    b'{"jsonrpc":"2.0","id":-1e400,"method":"engine.ping"}',
    b'{"jsonrpc":"2.0","id":3,"method":"playlist.join","params":{"waypoints":[1,2],"noise":1e999}}',
])
def test_numbers_out_of_range_are_never_echoed_as_infinity(unix_daemon, line):
    with Raw(unix_daemon.socket) as r:
        r.line(line)
        raw = read_raw(r)
        assert b"Infinity" not in raw and b"NaN" not in raw
        reply = strict_json(raw)
        assert_error(reply, PARSE_ERROR, None)
        assert "out of range" in reply["error"]["message"]
        r.ping()


def test_fuzzed_lines_get_exactly_one_valid_reply_or_none(unix_daemon):
    """Requests with an id get exactly one strict-JSON reply; notifications get none."""
    text = st.text(alphabet=st.characters(categories=["L", "N", "P", "Cs", "Co"]), max_size=6)
    number = st.integers() | st.floats(allow_nan=False) | st.sampled_from(
        ["1e999", "-1e999", "1e-999", "123456789012345678901234567890"])
    scalar = st.none() | st.booleans() | number | text
    value = st.recursive(scalar, lambda c: st.lists(c, max_size=3)
                         | st.dictionaries(text, c, max_size=3), max_leaves=8)
    methods = st.sampled_from(["engine.ping", "engine.status", "engine.auth", "library.tracks",
                               "library.track", "library.scan_status", "playlist.join",
                               "playlist.radio", "sink.mpd.send", "no.such"]) | text

    def encode(v) -> str:
        if isinstance(v, str) and v and v[0] in "-1" and v.strip("-0123456789e") == "":
            return v  # a raw number literal
        if isinstance(v, list):
            return "[" + ",".join(encode(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(k) + ":" + encode(x) for k, x in v.items()) + "}"
        return json.dumps(v)

    request = st.fixed_dictionaries({"method": methods},
                                    optional={"id": st.none() | number | text, "params": value})

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(req=request)
    def check(req):
        body = '{"jsonrpc":"2.0","method":' + encode(req["method"])
        if "id" in req:
            body += ',"id":' + encode(req["id"])
        if "params" in req:
            body += ',"params":' + encode(req["params"])
        body += "}"
        with Raw(unix_daemon.socket) as conn:
            conn.line(body.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
            conn.sock.shutdown(socket.SHUT_WR)
            replies = []
            while raw := read_raw(conn):
                replies.append(strict_json(raw))
        if "id" not in req:
            # a notification: never answered (unless the line itself is not a valid request)
            assert all(r.get("id") is None and "error" in r for r in replies), replies
            assert len(replies) <= 1
            return
        assert len(replies) == 1, (body, replies)
        r = replies[0]
        assert r["jsonrpc"] == "2.0" and ("result" in r) != ("error" in r)
        if "error" in r:
            assert r["error"]["code"] != -32603, r

    check()
    assert unix_daemon.alive()


# ============================================================================ 7. no stalls
class Gated:
    """A facade whose heavy method blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started: list[str] = []
        self.lock = threading.Lock()

    def hold(self, tag: str) -> str:
        with self.lock:
            self.started.append(tag)
        assert self.gate.wait(60)
        return tag

    def quick(self) -> str:
        return "quick"

    def close(self) -> None:
        pass


@pytest.fixture
def gated_server(tmp_path):
    from deejai.engine.methods import method_from_function
    from deejai.engine.rpc import Server

    facade = Gated()
    methods = {
        "test.hold": method_from_function("test.hold", Gated.hold, skip=1, heavy=True),
        "test.quick": method_from_function("test.quick", Gated.quick, skip=1),
    }
    path = tmp_path / "gated.sock"
    server = Server(facade, socket_path=path, methods=methods, threads=2, heavy_threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.started.wait(10)
    yield server, facade, str(path)
    facade.gate.set()
    server.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def _until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_heavy_calls_neither_block_cheap_ones_nor_another_clients_turn(gated_server):
    """A client that fills the heavy lane with batches cannot hold up a cheap call, and a
    heavy call of another client runs next, not after the flood (it waited behind 1,600)."""
    from deejai.engine.rpc import MAX_IN_FLIGHT

    server, facade, path = gated_server
    lane = server.dispatcher.heavy_lane
    with Raw(path) as hog, Raw(path) as other:
        for b in range(16):
            hog.line([{"jsonrpc": "2.0", "id": f"{b}-{i}", "method": "test.hold",
                       "params": {"tag": "hog"}} for i in range(100)])
        _until(lambda: len(facade.started) == 2 and lane.waiting >= MAX_IN_FLIGHT - 2,
               "the heavy lane to fill")
        # batch members count one by one against the connection's in-flight limit
        assert lane.running + lane.waiting <= MAX_IN_FLIGHT
        # every heavy thread is blocked: the cheap call is answered anyway
        assert other.ask({"jsonrpc": "2.0", "id": "q", "method": "test.quick"})["result"] == "quick"
        other.ping()
        other.line({"jsonrpc": "2.0", "id": "mine", "method": "test.hold",
                    "params": {"tag": "other"}})
        _until(lambda: lane.waiting >= MAX_IN_FLIGHT - 1, "the other client's call to queue")
        facade.gate.set()
        assert other.read() == {"jsonrpc": "2.0", "id": "mine", "result": "other"}
        # round-robin between connections: one turn after the two calls that were running
        assert facade.started.index("other") <= 3, facade.started[:10]
        got = 0
        for _ in range(16):
            batch = hog.read()
            assert len(batch) == 100 and all(r["result"] == "hog" for r in batch)
            got += 1
        assert got == 16


def test_a_client_flooding_joins_does_not_delay_anothers_status(deejai_home, daemons):
    """The issue's stall on the real daemon: batches of 100 playlist.join from one client;
    another client's engine.status is answered before the flood is (it waited for all)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.rpc import build_library

    build_library(deejai_home, 2000)
    d = start_daemon(daemons, deejai_home)
    with Raw(d.socket) as warm:  # build the catalogue and index first
        assert "result" in warm.ask({"jsonrpc": "2.0", "id": 0, "method": "playlist.join",
                                     "params": {"waypoints": [1, 2], "n": 10}})
    events: list[str] = []  # what arrived, in order: "batch" (one per batch), "status"
    results = []

    def read_hog(hog: Raw) -> None:
        try:
            while events.count("batch") < 16 and (batch := hog.read()) is not None:
                if isinstance(batch, dict):
                    events.append(batch["id"])
                    continue
                results.extend(r for r in batch if "result" in r)
                events.append("batch")
        except (OSError, ValueError):
            pass

    with Raw(d.socket, timeout=300) as hog, Raw(d.socket) as other:
        reader = threading.Thread(target=read_hog, args=(hog,), daemon=True)
        reader.start()
        for b in range(16):
            hog.line([{"jsonrpc": "2.0", "id": f"{b}-{i}", "method": "playlist.join",
                       "params": {"waypoints": [1 + (7 * i + b) % 1000, 1001 + (13 * i) % 999],
                                  "n": 10}} for i in range(100)])
        # a marker behind the flood: once it is answered, every batch was read and queued
        hog.line({"jsonrpc": "2.0", "id": "marker", "method": "engine.ping"})
        _until(lambda: "marker" in events, "the marker", 300)
        status = other.ask({"jsonrpc": "2.0", "id": "s", "method": "engine.status"})
        events.append("status")
        assert status["result"]["tracks"] == 2000
        hog.sock.shutdown(socket.SHUT_RDWR)  # the rest of the flood is dropped with it
        reader.join(60)
    before = events[events.index("marker"):events.index("status")].count("batch")
    assert len(results) == 100 * events.count("batch")  # the joins really ran
    assert before <= 4, f"{before} of the 16 batches were answered before the status"


# ============================================================================ 8. clear errors
def _call(r: Raw, method: str, params: dict, rid: object = 1) -> dict:
    return r.ask({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


@pytest.mark.parametrize("params, param", [
    ({"limit": 2**63}, "limit"),
    ({"limit": 10**30}, "limit"),
    ({"limit": -1}, "limit"),
    ({"query": "x" * 100_001}, "query"),
    ({"query": " ".join(["word"] * 1001)}, "query"),
])
def test_library_tracks_bad_values_are_invalid_params(unix_daemon, params, param):
    with Raw(unix_daemon.socket) as r:
        err = assert_error(_call(r, "library.tracks", params), INVALID_PARAMS, 1)
        assert err["data"] == {"param": param}
        assert param in err["message"] and "internal" not in err["message"]
        assert _call(r, "library.tracks", {"limit": 2**63 - 1}, 2)["result"] == []


def test_a_query_of_too_many_words_is_refused_wherever_a_track_is_named(unix_daemon):
    long_query = " ".join(["word"] * 1001)
    with Raw(unix_daemon.socket) as r:
        for method, params in (("library.track", {"track": long_query}),
                               ("library.resolve", {"track": long_query}),
                               ("library.track", {"track": "y" * 100_001})):
            err = assert_error(_call(r, method, params), INVALID_PARAMS, 1)
            assert "1000 words" in err["message"] or "100000 characters" in err["message"]


def test_in_process_engine_gives_the_same_clear_errors(deejai_home):
    from deejai.engine.service import Engine

    with Engine() as engine:
        with pytest.raises(InvalidParamsError, match="limit"):
            engine.tracks(limit=2**63)
        with pytest.raises(InvalidParamsError, match="1000 words"):
            engine.tracks(query=" ".join(["w"] * 1001))
        with pytest.raises(InvalidParamsError, match="workers"):
            engine.scan(paths=[str(deejai_home)], workers=-3)


PLAYLIST = {"kind": "radio", "params": {}, "entries": [
    {"id": 1, "path": "/m/a.mp3", "artist": "A", "title": "T", "album": "", "duration_s": 6.0,
     "distance": 0.0}]}


@pytest.mark.parametrize("options, param", [
    ({"port": "x"}, "port"),
    ({"port": 70000}, "port"),
    ({"colour": "red"}, "colour"),
    ({"mode": 5}, "mode"),
    ({"mode": "shuffle"}, "mode"),
    ({"host": ["a"]}, "host"),
    ({"save_as": {"x": 1}}, "save_as"),
])
def test_sink_mpd_send_checks_its_options(unix_daemon, options, param):
    with Raw(unix_daemon.socket) as r:
        err = assert_error(_call(r, "sink.mpd.send", {"playlist": PLAYLIST, **options}),
                           INVALID_PARAMS, 1)
        assert err["data"] == {"param": param}, err


# ============================================================================ 9. workers
def test_scan_workers_are_checked_and_capped(deejai_home, daemons, tmp_path):
    cores = len(os.sched_getaffinity(0))
    empty = tmp_path / "empty"
    empty.mkdir()
    d = start_daemon(daemons, deejai_home, env={"DEEJAI_WORKERS": "0"})
    with Raw(d.socket) as r:
        for bad in (-3, 0.5, "4", True):
            err = assert_error(_call(r, "library.scan", {"paths": [str(empty)], "workers": bad}),
                               INVALID_PARAMS, 1)
            assert err["data"] == {"param": "workers"}
        reply = _call(r, "library.scan", {"paths": [str(empty)], "workers": 10**12})
        assert reply["result"]["workers"] == cores
        _until(lambda: _call(r, "library.scan_status", {})["result"]["state"] != "running",
               "the scan to end")
    d.stop()
    # a setting may raise the cap
    d.paths.settings_file.write_text(f"max_workers = {cores + 3}\n", encoding="utf-8")
    d2 = start_daemon(daemons, deejai_home, env={"DEEJAI_WORKERS": "0"})
    with Raw(d2.socket) as r:
        assert _call(r, "library.scan", {"paths": [str(empty)], "workers": 10**12}
                     )["result"]["workers"] == cores + 3


def test_a_huge_workers_value_starts_no_more_processes_than_cores(deejai_home, daemons, tmp_path):
    """workers=10**12 started one process per file; now at most one per core."""
    from tests.audiogen import make_library

    cores = len(os.sched_getaffinity(0))
    music = tmp_path / "music"
    make_library(music, n=cores + 2, seconds=2.0)
    d = start_daemon(daemons, deejai_home, env={"DEEJAI_WORKERS": "0"})
    daemon = psutil.Process(d.proc.pid)
    seen = 0
    with Raw(d.socket) as r:
        assert "job" in _call(r, "library.scan", {"paths": [str(music)], "workers": 10**12}
                              )["result"]
        while _call(r, "library.scan_status", {})["result"]["state"] == "running":
            try:
                workers = [p for p in daemon.children(recursive=True)
                           if "spawn_main" in " ".join(p.cmdline())]
            except psutil.Error:
                continue
            seen = max(seen, len(workers))
            time.sleep(0.02)
        assert _call(r, "library.scan_status", {})["result"]["state"] == "finished"
    assert 1 <= seen <= cores, seen


# ============================================================================ 10. systemd
LAUNCHER = (
    "import os, socket, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.dup2(fd, 3)\n"
    "os.environ['LISTEN_FDS'] = '1'\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'deejai.ui_cli.main', 'serve'])\n"
)
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def _activate(how: str, host: str, home: Path) -> tuple[subprocess.Popen, int]:
    """``deejai serve`` started the way systemd does, on a TCP socket bound to ``host``."""
    env = dict(os.environ, DEEJAI_HOME=str(home), DEEJAI_NO_DAEMON="")
    env.pop("DEEJAI_SOCKET", None)
    if how == "systemd-socket-activate":
        if SOCKET_ACTIVATE is None:
            pytest.skip("systemd-socket-activate is not installed (Debian: apt-get install systemd)")
        port = free_tcp_port()
        # it passes its children no environment but what -E names
        passed = [f"-E{name}" for name in ("DEEJAI_HOME", "DEEJAI_NO_DAEMON", "PATH", "HOME")]
        proc = subprocess.Popen(
            [SOCKET_ACTIVATE, "-l", f"{host}:{port}", *passed, sys.executable, "-m",
             "deejai.ui_cli.main", "serve"], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:  # it listens, then starts the daemon on the first connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        return proc, port
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(listener.fileno())],
                            pass_fds=(listener.fileno(),), env=env, stderr=subprocess.PIPE,
                            text=True)
    listener.close()
    return proc, port


@pytest.mark.parametrize("how", ["systemd-socket-activate", "launcher"])
def test_systemd_tcp_socket_on_all_interfaces_is_refused(deejai_home, how):
    proc, port = _activate(how, "0.0.0.0", deejai_home)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "loopback" in err and f"0.0.0.0:{port}" in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["systemd-socket-activate", "launcher"])
def test_systemd_tcp_socket_on_loopback_gets_the_tcp_rules(deejai_home, how):
    from tests.test_rpc import home_paths

    p = home_paths(deejai_home)
    proc, port = _activate(how, "127.0.0.1", deejai_home)
    address = f"tcp://127.0.0.1:{port}"
    token_path = p.runtime_dir / "deejai.token"
    try:
        _until(lambda: token_path.exists() or proc.poll() is not None, "the token file", 60)
        assert proc.poll() is None, proc.stderr.read()
        assert os.stat(token_path).st_mode & 0o777 == 0o600
        token = token_path.read_text().strip()
        with Raw(address) as r:  # no token: refused, as with --tcp
            assert_error(r.ask({"jsonrpc": "2.0", "id": 1, "method": "engine.ping"}),
                         AUTH_ERROR, 1)
        with Client.connect(address, token=token, timeout=10) as c:
            assert c.ping()["pid"] == proc.pid
        from deejai.engine.rpc import read_daemon_info

        assert read_daemon_info(p)["tcp"] == address
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not token_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ============================================================================ 12. MPD password
class RecordingListener:
    """A TCP listener that greets like MPD, answers OK to everything, and records each line
    it receives: where a password would go if deejai sent it to any host a client names."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            f.write(b"OK MPD 0.23.5\n")
            f.flush()
            for raw in f:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                if raw.startswith(b"close"):
                    return
                f.write(b"OK\n")
                f.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def password_mpd(tmp_path_factory):
    from tests.test_mpd import running_mpd

    with running_mpd(tmp_path_factory.mktemp("mpd-password"), password="s3cret pass") as server:
        yield server


def test_the_mpd_password_goes_only_to_the_configured_mpd(password_mpd, deejai_home, daemons):
    from tests.test_rpc import home_paths

    server = password_mpd
    songs = sorted(server.music.rglob("*.mp3"))[:2]
    playlist = {"kind": "radio", "params": {}, "entries": [
        {"id": i, "path": str(p), "artist": "", "title": p.stem, "album": "",
         "duration_s": 2.0, "distance": 0.0} for i, p in enumerate(songs)]}
    home = home_paths(deejai_home)
    home.config_dir.mkdir(parents=True, exist_ok=True)
    home.settings_file.write_text(
        f'[mpd]\nhost = "127.0.0.1"\nport = {server.port}\npassword = "s3cret pass"\n'
        f'music_directory = "{server.music}"\n', encoding="utf-8")
    recorder = RecordingListener()
    d = start_daemon(daemons, deejai_home)
    try:
        with Raw(d.socket) as r:
            # the configured MPD: the password is sent, and needed (anonymous is read-only)
            server.reset_queue()
            sent = _call(r, "sink.mpd.send", {"playlist": playlist})
            assert len(sent["result"]["added"]) == 2, sent
            assert len(server.queue()) == 2
            # another port on the same host: the configured password is not sent there
            err = _call(r, "sink.mpd.send", {"playlist": playlist, "port": recorder.port}, 2)
            assert "error" in err
            assert recorder.connections >= 1
            assert not [line for line in recorder.lines if "s3cret" in line], recorder.lines
            assert "password" in err["error"]["message"]  # says why MPD may refuse
            # the configured port on another host name: not sent either
            err = _call(r, "sink.mpd.send", {"playlist": playlist, "host": "localhost"}, 3)
            assert "password" in err["error"]["message"], err  # MPD refused the anonymous add
            assert not [line for line in recorder.lines if "s3cret" in line]
            # a password in the request is the client's choice: it goes where it is told
            _call(r, "sink.mpd.send", {"playlist": playlist, "port": recorder.port,
                                       "password": "given"}, 4)
            assert 'password "given"' in recorder.lines
    finally:
        recorder.close()


def test_the_cli_sends_the_configured_password_only_to_the_configured_mpd(password_mpd):
    from deejai.engine.errors import SinkError
    from deejai.plugins.mpd import send

    recorder = RecordingListener()
    settings_ = {"host": "127.0.0.1", "port": password_mpd.port, "password": "s3cret pass",
                 "music_directory": str(password_mpd.music)}
    songs = sorted(password_mpd.music.rglob("*.mp3"))[:1]
    from deejai.engine.catalogue import Playlist, PlaylistEntry

    pl = Playlist(entries=[PlaylistEntry(id=0, path=str(songs[0]), title="x")])
    try:
        with pytest.raises(SinkError):
            send(pl, settings_, port=recorder.port)  # --mpd-port elsewhere
        assert recorder.lines and not [x for x in recorder.lines if "s3cret" in x]
        password_mpd.reset_queue()
        assert send(pl, settings_)["added"]  # the configured one still works
    finally:
        recorder.close()
