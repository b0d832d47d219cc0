"""The JSON-RPC transport against a real ``deejai serve`` process on a real Unix socket.

Every malformed input gets an error reply (or the connection is dropped) and the daemon keeps
serving the others; the :class:`~deejai.engine.rpc.Client` mirrors the Engine facade.
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deejai.engine.config import Paths
from deejai.engine.errors import (
    ConfigError,
    DaemonError,
    InvalidParamsError,
    PlaylistError,
    TrackNotFoundError,
)
from deejai.engine.rpc import (
    BUILTIN_METHODS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Client,
    parse_address,
    read_daemon_info,
)


# ------------------------------------------------------------------------------ helpers
def home_paths(home: Path) -> Paths:
    """The folders ``deejai.engine.config.paths()`` gives for ``DEEJAI_HOME=home``."""
    home = Path(home)
    return Paths(home / "config", home / "data", home / "state", home / "run")


class Daemon:
    """A ``deejai serve`` subprocess with its own DEEJAI_HOME."""

    def __init__(self, home: Path, *args: str, env: dict | None = None):
        self.home = Path(home)
        self.paths = home_paths(self.home)
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.update({"DEEJAI_HOME": str(self.home), "DEEJAI_NO_DAEMON": "",
                         "PYTHONUNBUFFERED": "1", "DEEJAI_WORKERS": "1"})
        self.env.pop("DEEJAI_SOCKET", None)
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.home / f"serve-{time.monotonic_ns()}.err"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "deejai.ui_cli.main", "serve", "--foreground", *self.args]

    def start(self, wait: bool = True) -> "Daemon":
        self.home.mkdir(parents=True, exist_ok=True)
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self._err, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def info(self) -> dict:
        return read_daemon_info(self.paths) or {}

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Wait until the daemon recorded its addresses and answers a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            info = self.info()
            if info.get("pid") == self.proc.pid:
                addr = info.get("socket") or info.get("tcp")
                try:
                    with Client.connect(addr, timeout=2.0, token=self.token()) as c:
                        c.ping()
                    return info
                except DaemonError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s: {self.stderr()}")

    @property
    def socket(self) -> str:
        return self.info().get("socket") or str(self.paths.socket_file)

    def token(self) -> str | None:
        try:
            return (self.paths.runtime_dir / "deejai.token").read_text().strip()
        except OSError:
            return None

    def client(self, **kw) -> Client:
        info = self.info()
        return Client.connect(info.get("socket") or info.get("tcp"), token=self.token(), **kw)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_err", None):
            self._err.close()


class Raw:
    """A bare socket speaking newline-delimited JSON, for malformed input."""

    def __init__(self, address: str, timeout: float = 20.0):
        if address.startswith("tcp://"):
            a = parse_address(address)
            self.sock = socket.create_connection((a.host, a.port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes | str | dict | list) -> None:
        if isinstance(data, (dict, list)):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, obj: bytes | str | dict | list) -> None:
        """Send one message (adds the newline)."""
        if isinstance(obj, (dict, list)):
            obj = json.dumps(obj)
        if isinstance(obj, str):
            obj = obj.encode()
        self.send(obj + b"\n")

    def read(self) -> dict | list | None:
        raw = self.file.readline()
        return json.loads(raw) if raw else None

    def ask(self, obj) -> dict | list | None:
        self.line(obj)
        return self.read()

    def ping(self, rid: object = "ping") -> dict:
        reply = self.ask({"jsonrpc": "2.0", "id": rid, "method": "engine.ping"})
        assert reply == {"jsonrpc": "2.0", "id": rid, "result": reply["result"]}
        assert reply["result"]["pong"] is True
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_daemon(daemons: list, home: Path, *args: str, **kw) -> Daemon:
    """Start a :class:`Daemon` on ``home`` and wait until it answers; the ``daemons``
    fixture's list stops it when the test ends."""
    d = Daemon(home, *args, **kw)
    daemons.append(d)
    return d.start()


def assert_error(reply: dict, code: int, rid: object = None) -> dict:
    assert reply["jsonrpc"] == "2.0"
    assert "result" not in reply
    assert reply["id"] == rid
    assert reply["error"]["code"] == code
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("rpc-home")).start()
    yield d
    d.stop()


@pytest.fixture
def raw(daemon):
    with Raw(daemon.socket) as r:
        yield r
    assert daemon.alive(), daemon.stderr()


# ------------------------------------------------------------------------------ framing
def test_ping_over_socket(daemon, raw):
    reply = raw.ping(7)
    assert reply["result"]["pid"] == daemon.proc.pid
    assert reply["result"]["protocol"] == 1


def test_bad_json_gets_parse_error_and_connection_survives(raw):
    assert_error(raw.ask(b'{"jsonrpc": "2.0", "method": "engine.ping", "id": 1'), PARSE_ERROR)
    assert_error(raw.ask(b"not json at all"), PARSE_ERROR)
    assert_error(raw.ask(b'{"jsonrpc":"2.0","id":1,"method":"engine.ping","x":NaN}'), PARSE_ERROR)
    assert_error(raw.ask(b"\xff\xfe{}"), PARSE_ERROR)  # not UTF-8
    raw.ping()


def test_deeply_nested_json_is_a_parse_error(raw):
    assert_error(raw.ask(b"[" * 200_000 + b"]" * 200_000), PARSE_ERROR)
    raw.ping()


def test_line_over_limit_is_refused_and_discarded(raw):
    # one oversized line, sent in pieces, that would be a valid request if it were read
    filler = "x" * (MAX_LINE_BYTES + 10)
    line = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "engine.ping",
                       "params": {"pad": filler}}).encode()
    for i in range(0, len(line), 200_000):
        raw.send(line[i:i + 200_000])
    raw.send(b"\n")
    err = assert_error(raw.read(), INVALID_REQUEST)
    assert err["data"]["limit_bytes"] == MAX_LINE_BYTES
    # exactly one error, then the connection reads the next line normally
    raw.ping("after")


def test_line_just_under_limit_is_read(raw):
    pad = "y" * (MAX_LINE_BYTES - 200)
    reply = raw.ask({"jsonrpc": "2.0", "id": 5, "method": "engine.ping", "params": {"pad": pad}})
    # read in full: the unknown parameter is reported, not the size
    assert_error(reply, INVALID_PARAMS, 5)


@pytest.mark.parametrize(
    "message",
    [
        42,
        "engine.ping",
        None,
        {},
        {"id": 1, "method": "engine.ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "engine.ping"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": "engine.ping", "params": "x"},
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "engine.ping"},
        {"jsonrpc": "2.0", "id": True, "method": "engine.ping"},
        [],
    ],
)
def test_valid_json_that_is_not_a_request(raw, message):
    reply = raw.ask(json.dumps(message))
    rid = message.get("id") if isinstance(message, dict) else None
    if not isinstance(rid, (int, str)) or isinstance(rid, bool):
        rid = None
    assert_error(reply, INVALID_REQUEST, rid)
    raw.ping()


def test_unknown_method(raw):
    err = assert_error(raw.ask({"jsonrpc": "2.0", "id": "a", "method": "library.drop_all"}),
                       METHOD_NOT_FOUND, "a")
    assert err["data"] == {"method": "library.drop_all"}
    # Engine methods that are not on the wire are unknown too
    for name in ("engine.close", "close", "engine.subscribe_callback", "__init__", "_library"):
        assert_error(raw.ask({"jsonrpc": "2.0", "id": 1, "method": name}), METHOD_NOT_FOUND, 1)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"waypoints": ["a", "b"], "n": "eight"}, "n"),
        ({"waypoints": "a", "n": 3}, "waypoints"),
        ({"waypoints": [["a"], "b"]}, "waypoints"),
        ({"waypoints": ["a", "b"], "noise": "lots"}, "noise"),
        ({"waypoints": ["a", "b"], "transitions": 1}, "transitions"),
        ({"waypoints": ["a", "b"], "seed": 1.5}, "seed"),
    ],
)
def test_wrong_param_types(raw, params, name):
    err = assert_error(raw.ask({"jsonrpc": "2.0", "id": 3, "method": "playlist.join",
                                "params": params}), INVALID_PARAMS, 3)
    assert name in err["message"]
    assert err["data"] == {"param": name}


@pytest.mark.parametrize(
    "method, params",
    [
        ("playlist.join", {}),  # missing required
        ("playlist.join", {"waypoints": ["a", "b"], "colour": "red"}),  # unknown name
        ("playlist.join", ["a", "b", "c", "d", "e", "f", "g", "h", "i"]),  # too many
        ("library.track", {}),
        ("engine.ping", {"x": 1}),
        ("engine.status", [1]),
    ],
)
def test_params_that_do_not_bind(raw, method, params):
    assert_error(raw.ask({"jsonrpc": "2.0", "id": 4, "method": method, "params": params}),
                 INVALID_PARAMS, 4)


def test_positional_params_and_null_params(raw):
    reply = raw.ask({"jsonrpc": "2.0", "id": 1, "method": "library.scan_status",
                     "params": [None]})
    assert reply["result"]["state"] == "idle"
    reply = raw.ask({"jsonrpc": "2.0", "id": 2, "method": "engine.ping", "params": None})
    assert reply["result"]["pong"] is True


def test_notification_gets_no_reply(raw):
    raw.line({"jsonrpc": "2.0", "method": "engine.ping"})
    raw.line({"jsonrpc": "2.0", "method": "no.such.method"})  # errors are not sent either
    raw.ping("only")  # the very next line read is this reply


def test_batch(raw):
    reply = raw.ask([
        {"jsonrpc": "2.0", "id": 1, "method": "engine.ping"},
        {"jsonrpc": "2.0", "method": "engine.ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        17,
    ])
    assert isinstance(reply, list) and len(reply) == 3
    by_id = {r["id"]: r for r in reply}
    assert by_id[1]["result"]["pong"] is True
    assert_error(by_id[2], METHOD_NOT_FOUND, 2)
    assert_error(by_id[None], INVALID_REQUEST)
    # a batch of notifications only: no reply at all
    raw.line([{"jsonrpc": "2.0", "method": "engine.ping"}])
    raw.ping()
    assert_error(raw.ask([{"jsonrpc": "2.0", "id": i, "method": "engine.ping"}
                          for i in range(101)]), INVALID_REQUEST)


def test_application_error_codes(raw):
    err = assert_error(raw.ask({"jsonrpc": "2.0", "id": 1, "method": "playlist.join",
                                "params": {"waypoints": ["only one"]}}), PlaylistError.code, 1)
    assert "two waypoints" in err["message"]
    err = assert_error(raw.ask({"jsonrpc": "2.0", "id": 2, "method": "library.scan",
                                "params": {"paths": ["/no/such/folder/anywhere"]}}),
                       ConfigError.code, 2)
    assert "/no/such/folder/anywhere" in err["message"]


# ------------------------------------------------------------------------------ misbehaving peers
def test_silent_and_half_line_clients_do_not_block_others(daemon):
    silent = [Raw(daemon.socket) for _ in range(5)]
    half = Raw(daemon.socket)
    half.send(b'{"jsonrpc": "2.0", "id": 1, "meth')  # never finished
    try:
        with Raw(daemon.socket) as other:
            for i in range(20):
                other.ping(i)
        with daemon.client() as c:
            assert c.ping()["pid"] == daemon.proc.pid
    finally:
        for r in [*silent, half]:
            r.close()


def test_client_that_disconnects_mid_request(daemon):
    for i in range(30):
        r = Raw(daemon.socket)
        if i % 3 == 0:
            r.line({"jsonrpc": "2.0", "id": i, "method": "engine.status"})
        elif i % 3 == 1:
            r.send(b'{"jsonrpc":"2.0","id":1,"method":"library.tracks","par')
        else:
            r.line({"jsonrpc": "2.0", "id": i, "method": "library.tracks",
                    "params": {"limit": 5}})
            r.sock.shutdown(socket.SHUT_RDWR)
        r.close()
    with Raw(daemon.socket) as other:
        other.ping()
    assert daemon.alive()


def test_half_closed_client_still_gets_its_reply(daemon):
    r = Raw(daemon.socket)
    r.line({"jsonrpc": "2.0", "id": 11, "method": "engine.ping"})
    r.sock.shutdown(socket.SHUT_WR)  # like `nc -N`: done sending, still reading
    assert r.read()["id"] == 11
    assert r.read() is None  # then the daemon closes
    r.close()


def test_a_client_that_does_not_read_does_not_block_others(daemon):
    """Pipeline thousands of requests and never read: only that connection backs up."""
    hog = Raw(daemon.socket)
    hog.sock.setblocking(False)
    request = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "engine.ping"}) + "\n").encode()
    sent = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline and sent < 40_000:
            try:
                hog.sock.send(request * 50)
                sent += 50
            except BlockingIOError:
                break  # the daemon stopped reading us: back pressure works
        with Raw(daemon.socket) as other:
            for i in range(10):
                other.ping(i)
    finally:
        hog.close()
    with Raw(daemon.socket) as other:
        other.ping()


def test_fuzzed_request_bodies(daemon):
    """Random messages: exactly one well-formed reply (none for notifications), daemon alive."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
    # everything but calls with side effects outside the daemon (scan, export, shutdown)
    methods = st.sampled_from([
        "engine.ping", "engine.status", "engine.subscribe", "engine.unsubscribe", "engine.auth",
        "library.tracks", "library.track", "library.resolve", "library.scan_status",
        "library.cancel_scan", "playlist.join", "playlist.radio", "no.such", "",
    ]) | st.text(max_size=15).filter(
        lambda m: m not in ("engine.shutdown", "library.scan", "playlist.export"))
    requests = st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0"]), "method": methods},
        optional={"id": st.none() | st.integers() | st.text(max_size=8) | st.floats(
            allow_nan=False, allow_infinity=False),
            "params": json_values},
    )
    bodies = requests.map(json.dumps) | json_values.map(json.dumps) | st.binary(max_size=64).filter(
        lambda b: b"\n" not in b)
    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(body=bodies)
    def check(body):
        # One connection per message: send it, half-close, read every reply until the daemon
        # closes (replies on one connection may come in any order, so no marker request).
        data = body.encode() if isinstance(body, str) else body
        with Raw(daemon.socket) as conn:
            conn.line(data)
            conn.sock.shutdown(socket.SHUT_WR)
            replies = []
            while (reply := conn.read()) is not None:
                replies.append(reply)
        assert len(replies) <= 1, replies
        for reply in replies:
            for r in reply if isinstance(reply, list) else [reply]:
                assert r["jsonrpc"] == "2.0"
                assert ("result" in r) != ("error" in r)
                if "error" in r:
                    assert isinstance(r["error"]["code"], int)
                    assert isinstance(r["error"]["message"], str)
                    assert r["error"]["code"] != -32603, r  # no internal errors on bad input

    check()
    assert daemon.alive(), daemon.stderr()
    with daemon.client() as c:
        assert c.ping()["pid"] == daemon.proc.pid
        assert c.scan_status()["state"] == "idle"
    assert "Traceback" not in daemon.stderr()


# ------------------------------------------------------------------------------ client
def test_client_raises_the_engine_errors(daemon):
    with daemon.client() as c:
        with pytest.raises(PlaylistError, match="two waypoints"):
            c.join(waypoints=["one"])
        with pytest.raises(ConfigError):
            c.scan(paths=["/no/such/folder/anywhere"])
        with pytest.raises(DaemonError, match="method not found"):
            c.call("no.such.method")
        with pytest.raises(InvalidParamsError, match="n: expected `int`, got `str`") as bad:
            c.join(waypoints=["a", "b"], n="eight")
        assert bad.value.param == "n"  # -32602 is raised as the Engine's own error
        assert c.scan_status() == {"job": None, "state": "idle"}
        assert c.cancel_scan() == {"job": None, "cancelled": False}
        with pytest.raises(DaemonError, match="over the daemon's limit"):
            c.export({"entries": ["x" * 100] * 20_000})


def test_plugin_rpc_methods_are_served(raw):
    """Methods from the register_rpc_methods hook (the built-in exporters' playlist.formats)."""
    reply = raw.ask({"jsonrpc": "2.0", "id": 1, "method": "playlist.formats"})
    names = {f["name"] for f in reply["result"]} if isinstance(reply["result"], list) else set(
        reply["result"])
    assert {"m3u8", "xspf", "json"} <= names, reply
    bad = raw.ask({"jsonrpc": "2.0", "id": 2, "method": "playlist.formats", "params": {"x": 1}})
    assert_error(bad, -32602, 2)


def test_export_of_junk_is_a_playlist_error(raw):
    reply = raw.ask({"jsonrpc": "2.0", "id": 3, "method": "playlist.export",
                     "params": {"playlist": {"entries": [{}]}}})
    assert assert_error(reply, -32050, 3)["message"].startswith("not a playlist")


def test_client_track_not_found(daemon):
    with daemon.client() as c:
        with pytest.raises(TrackNotFoundError):
            c.track(123456)


def test_client_is_thread_safe(daemon):
    errors = []
    with daemon.client() as c:
        def work(k):
            try:
                for i in range(50):
                    assert c.call("engine.ping")["pid"] == daemon.proc.pid
                    assert c.scan_status(None)["state"] == "idle"
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []


def test_client_events_iterator_times_out_without_events(daemon):
    with daemon.client() as c:
        assert list(c.events(timeout=0.2)) == []
        got = []
        unsubscribe = c.subscribe(lambda e, p: got.append(e))
        unsubscribe()
        assert c.ping()["pong"] is True


def test_client_methods_mirror_the_engine(daemon):
    """The client's methods come from the method table: same names and signatures."""
    from deejai.engine.service import ENGINE_METHODS, Engine

    with daemon.client() as c:
        for wire, method in ENGINE_METHODS.items():
            engine_sig = inspect.signature(getattr(Engine(paths=daemon.paths), method.attr))
            client_sig = inspect.signature(getattr(c, method.attr))
            assert [(p.name, p.default, p.kind) for p in engine_sig.parameters.values()] == [
                (p.name, p.default, p.kind) for p in client_sig.parameters.values()
            ], wire
        assert {"subscribe", "close", "wait_scan", "join", "ping"} <= set(dir(c))
        with pytest.raises(AttributeError):
            c.no_such_method
        with pytest.raises(TypeError, match="join"):
            c.join(["a", "b"], 3, colour="red")
    assert set(BUILTIN_METHODS).isdisjoint(ENGINE_METHODS)


def test_connect_when_nothing_answers(tmp_path, monkeypatch):
    assert Client.connect_or_none(timeout=0.5) is None
    with pytest.raises(DaemonError, match="deejai serve"):
        Client.connect(timeout=0.5)
    # a socket file nobody listens on (left by a killed daemon)
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    monkeypatch.setenv("DEEJAI_SOCKET", str(path))
    assert Client.connect_or_none(timeout=0.5) is None
    monkeypatch.setenv("DEEJAI_SOCKET", "tcp://127.0.0.1:1")
    with pytest.raises(DaemonError):
        Client.connect(timeout=0.5)


def test_client_finds_the_daemon_through_the_environment(daemon, monkeypatch):
    monkeypatch.setenv("DEEJAI_SOCKET", daemon.socket)
    with Client.connect() as c:
        assert c.ping()["pid"] == daemon.proc.pid
    monkeypatch.setenv("DEEJAI_SOCKET", "")
    monkeypatch.setenv("DEEJAI_HOME", str(daemon.home))
    c = Client.connect_or_none()
    assert c is not None
    c.close()
    assert c.closed
    with pytest.raises(DaemonError, match="closed"):
        c.ping()


@pytest.mark.parametrize("text", ["0.0.0.0:6601", "192.168.1.10:6601", "example.org:80",
                                  "127.0.0.1:http", "127.0.0.1:70000", "6601"])
def test_tcp_addresses_must_be_loopback(text):
    with pytest.raises(ConfigError):
        parse_address(text, tcp=True)


def test_parse_address_forms():
    assert str(parse_address("tcp://localhost:6601")) == "tcp://127.0.0.1:6601"
    assert str(parse_address("[::1]:6601", tcp=True)) == "tcp://[::1]:6601"
    assert parse_address("unix:/run/x.sock").path == "/run/x.sock"
    assert parse_address("/run/x.sock").kind == "unix"


# ------------------------------------------------------------------------------ in-process server
class EventSource:
    """A facade of the Engine's shape with its own methods (as a plugin's RPC methods would
    be): one that fails unexpectedly, and an event source the test drives."""

    def __init__(self):
        self.callbacks = []

    def subscribe(self, callback):
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def emit(self, event: str, params: dict) -> None:
        for cb in list(self.callbacks):
            cb(event, params)

    def boom(self, x: int = 0) -> dict:
        return {"ratio": 1 / x}

    def close(self) -> None:
        pass


@pytest.fixture
def local_server(tmp_path):
    from deejai.engine.rpc import Server

    source = EventSource()
    from deejai.engine.methods import method_from_function

    server = Server(source, socket_path=tmp_path / "local.sock",
                    methods={"test.boom": method_from_function("test.boom", EventSource.boom,
                                                               skip=1)}, queue_size=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.started.wait(10)
    yield server, source, str(tmp_path / "local.sock")
    server.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert not (tmp_path / "local.sock").exists()


def test_unexpected_exception_is_an_internal_error_and_logged(local_server, caplog):
    server, source, path = local_server
    with caplog.at_level("ERROR", logger="deejai.engine.rpc"), Raw(path) as r:
        err = assert_error(r.ask({"jsonrpc": "2.0", "id": 1, "method": "test.boom"}), -32603, 1)
        assert "ZeroDivisionError" in err["message"]
        assert r.ask({"jsonrpc": "2.0", "id": 2, "method": "test.boom",
                      "params": {"x": 4}})["result"] == {"ratio": 0.25}
    assert any(rec.exc_info and rec.exc_info[0] is ZeroDivisionError for rec in caplog.records)


def test_slow_subscriber_loses_progress_but_keeps_its_connection(local_server):
    server, source, path = local_server
    with Raw(path) as slow, Raw(path) as other:
        assert slow.ask({"jsonrpc": "2.0", "id": 1, "method": "engine.subscribe",
                         "params": {"events": ["scan.progress"]}})["result"] == {
            "subscribed": ["scan.progress"]}
        n = 20_000  # ~2 MB of notifications, far more than the socket buffers hold
        for i in range(n):
            source.emit("scan.progress", {"job": "j", "done": i, "total": n, "errors": 0,
                                          "rate": 1.0, "eta_s": None, "pad": "x" * 50})
            if i == n // 2:
                other.ping()  # the other connection is answered meanwhile
        source.emit("scan.finished", {"job": "j"})  # not subscribed to: never sent to slow
        time.sleep(0.5)
        got = 0
        slow.line({"jsonrpc": "2.0", "id": "p", "method": "engine.ping"})
        while True:
            msg = slow.read()
            if msg.get("id") == "p":
                break
            assert msg["method"] == "scan.progress"
            got += 1
        assert 0 < got < n  # some were dropped, the connection survived
        other.ping()


def test_overflowing_a_subscriber_with_other_events_closes_it(local_server):
    server, source, path = local_server
    with Raw(path) as slow, Raw(path) as other:
        slow.ask({"jsonrpc": "2.0", "id": 1, "method": "engine.subscribe"})
        for i in range(20_000):
            source.emit("scan.finished", {"job": str(i), "pad": "x" * 50})
        time.sleep(0.5)
        slow.sock.settimeout(10)  # a connection left open would time out here
        lines = 0
        try:
            while slow.file.readline():  # what was sent before the cut, then end of stream
                lines += 1
        except ConnectionResetError:
            pass
        assert lines < 20_000
        other.ping()
