"""The daemon's protocol: JSON-RPC 2.0 over a local socket, server and client.

``deejai serve`` runs a :class:`Server` around one :class:`~deejai.engine.service.Engine`;
front ends talk to it through a :class:`Client`, which has the same method names, keyword
parameters and results as the Engine and raises the same
:class:`~deejai.engine.errors.DeejaiError` subclasses. ``docs/protocol.md`` is the contract;
in short:

* **Framing**: one UTF-8 JSON-RPC 2.0 message per line (``\\n`` terminated), both ways.
  Lines longer than :data:`MAX_LINE_BYTES` (1 MiB) are answered with an ``-32600`` error and
  the rest of the line is discarded. Batches (JSON arrays of up to :data:`MAX_BATCH`
  requests) are supported.
* **Transports**: a Unix domain socket (``$XDG_RUNTIME_DIR/deejai/deejai.sock``, folder 0700,
  socket 0600) or TCP on a loopback address only. A TCP connection must first call
  ``engine.auth`` with the token the daemon keeps in ``<runtime dir>/deejai.token`` (0600);
  anything else is answered ``unauthorised`` and the connection is closed.
* **Concurrency**: an asyncio loop reads and writes every connection; Engine calls block, so
  they run in a thread pool and a scan never stops queries from being answered. Each
  connection has at most :data:`MAX_IN_FLIGHT` requests running and an outgoing queue of
  :data:`QUEUE_SIZE` lines: ``scan.progress`` notifications that do not fit are dropped (the
  next one supersedes them), any other line that does not fit closes that connection, and a
  peer that does not read for :data:`WRITE_TIMEOUT_S` seconds is disconnected. A slow client
  therefore never slows the others.
* **One daemon per library**: :class:`DaemonLock` holds an ``fcntl.flock`` on
  ``<data dir>/daemon.lock`` and records the daemon's pid and addresses there; a stale socket
  left by a killed daemon is removed when nothing answers on it.

The JSON-RPC 2.0 specification: https://www.jsonrpc.org/specification
"""
from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import functools
import inspect
import ipaddress
import itertools
import json
import logging
import os
import queue
import secrets
import signal
import socket
import stat
import threading
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from deejai.engine.config import Paths, paths as default_paths
from deejai.engine.errors import (
    ConfigError,
    DaemonError,
    DeejaiError,
    UnauthorisedError,
    error_from_code,
)

__all__ = [
    "Server",
    "Client",
    "DaemonLock",
    "Address",
    "parse_address",
    "serve",
    "read_daemon_info",
    "candidate_addresses",
    "token_file",
    "lock_file",
    "PROTOCOL_VERSION",
    "MAX_LINE_BYTES",
    "MAX_BATCH",
    "MAX_IN_FLIGHT",
    "QUEUE_SIZE",
    "AUTH_TIMEOUT_S",
    "WRITE_TIMEOUT_S",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "BUILTIN_METHODS",
]

log = logging.getLogger(__name__)

#: Version of the protocol described in ``docs/protocol.md`` (reported by ``engine.ping``).
PROTOCOL_VERSION = 1
#: Longest accepted line, in bytes, newline excluded.
MAX_LINE_BYTES = 1 << 20
#: Most requests in one batch.
MAX_BATCH = 100
#: Requests of one connection that may run at the same time; more wait (back pressure).
MAX_IN_FLIGHT = 16
#: Lines waiting to be written to one connection.
QUEUE_SIZE = 1000
#: Seconds a TCP connection has to authenticate.
AUTH_TIMEOUT_S = 10.0
#: Seconds a peer may leave written data unread before it is disconnected.
WRITE_TIMEOUT_S = 30.0
#: Most connections at once; more are answered with an error and closed.
MAX_CONNECTIONS = 256

# JSON-RPC 2.0 error codes (section 5.1 of the specification).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

#: Methods the server answers itself, per connection (not Engine methods).
BUILTIN_METHODS = ("engine.auth", "engine.ping", "engine.subscribe", "engine.unsubscribe",
                   "engine.shutdown")


def _plugin_rpc_methods(taken: set[str]) -> dict[str, Any]:
    """RPC methods plugins add (``register_rpc_methods``), minus names the engine already has.

    Each value is ``callable(engine, **params)``. A plugin system that fails to load leaves the
    daemon serving the engine's own methods.
    """
    try:
        from deejai.plugins.manager import rpc_methods

        found = dict(rpc_methods())
    except Exception:  # pragma: no cover - the manager already disables broken plugins
        log.exception("plugin RPC methods could not be loaded")
        return {}
    for name in sorted(set(found) & taken):
        log.warning("plugin RPC method %r ignored: the engine already has it", name)
        del found[name]
    return found


_READ_CHUNK = 1 << 16
_MISSING = object()


# ---------------------------------------------------------------------------------- addresses
@dataclass(frozen=True)
class Address:
    """Where a daemon listens: a Unix socket path or a loopback TCP host and port."""

    kind: str  # "unix" or "tcp"
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        return str(self.path)


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r}: give a loopback IP address such as 127.0.0.1") from None
    if not ip.is_loopback:
        raise ConfigError(
            f"{host}: the daemon listens on loopback addresses only (127.0.0.1 or ::1)"
        )
    return str(ip)


def parse_address(text: str | os.PathLike, *, tcp: bool | None = None) -> Address:
    """Parse a daemon address.

    Parameters
    ----------
    text : str or path
        ``tcp://HOST:PORT``, ``HOST:PORT`` (with ``tcp=True``), ``unix:PATH`` or a socket path.
    tcp : bool, optional
        True to read ``HOST:PORT`` without the ``tcp://`` prefix.

    Returns
    -------
    Address

    Raises
    ------
    ConfigError
        When the port is not a number or the host is not a loopback address (a daemon is
        never reachable from another machine).
    """
    s = os.fspath(text)
    if s.startswith("tcp://"):
        s, tcp = s[6:], True
    elif s.startswith("unix://"):
        return Address("unix", path=s[7:])
    elif s.startswith("unix:"):
        return Address("unix", path=s[5:])
    if not tcp:
        return Address("unix", path=s)
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:6601")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port_no = int(port)
    except ValueError:
        raise ConfigError(f"{text!r}: the port must be a number") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"{text!r}: the port must be between 0 and 65535")
    return Address("tcp", host=_loopback_host(host), port=port_no)


def lock_file(p: Paths | None = None) -> Path:
    """``<data dir>/daemon.lock``: held by the running daemon, records its pid and addresses."""
    return (p or default_paths()).data_dir / "daemon.lock"


def token_file(p: Paths | None = None) -> Path:
    """``<runtime dir>/deejai.token``: the TCP authentication token (mode 0600)."""
    return (p or default_paths()).runtime_dir / "deejai.token"


def read_daemon_info(p: Paths | None = None) -> dict[str, Any] | None:
    """What the running (or last) daemon recorded in its lock file, or None.

    Returns
    -------
    dict or None
        ``{"pid": int, "socket": str or None, "tcp": "tcp://127.0.0.1:PORT" or None,
        "started_at": float}``; None when there is no lock file or it is empty.
    """
    return _read_info_at(lock_file(p))


def candidate_addresses(p: Paths | None = None) -> list[str]:
    """Where a client looks for the daemon, in order (as MPD clients do with ``MPD_HOST``).

    ``DEEJAI_SOCKET`` alone when it is set (a path, or ``tcp://127.0.0.1:PORT``); else the
    default socket ``<runtime dir>/deejai.sock``, then the addresses the running daemon
    recorded in its lock file (a ``--socket`` elsewhere, or its TCP port).
    """
    env = os.environ.get("DEEJAI_SOCKET")
    if env:
        return [env]
    p = p or default_paths()
    out = [str(p.socket_file)]
    info = read_daemon_info(p) or {}
    for key in ("socket", "tcp"):
        value = info.get(key)
        if isinstance(value, str) and value and value not in out:
            out.append(value)
    return out


# ---------------------------------------------------------------------------------- JSON
def _json_default(obj: Any) -> Any:
    """Make NumPy scalars and arrays, paths and sets JSON-serialisable."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any) -> str:
    """Compact JSON on one line (``\\n`` inside strings is escaped, so framing is safe)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _error_line(rid: Any, code: int, message: str, data: Any = None) -> str:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    try:
        body = _dumps(err)
    except (TypeError, ValueError):
        err.pop("data", None)
        body = _dumps(err)
    return f'{{"jsonrpc":"2.0","id":{_dumps(rid)},"error":{body}}}'


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deejai")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class _RpcError(Exception):
    """A protocol-level error (parse, invalid request, unknown method, bad params)."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


# ---------------------------------------------------------------------------------- params
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if tp in names:
        return names[tp]
    if origin in (list, tuple, set, collections.abc.Sequence, collections.abc.Iterable,
                  collections.abc.Collection) or tp in (list, tuple):
        args = typing.get_args(tp)
        return f"array of {_type_name(args[0])}" if args and args[0] is not Ellipsis else "array"
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return "object"
    return getattr(tp, "__name__", str(tp))


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a parameter annotation (unknown annotations accept anything)."""
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        return isinstance(value, str)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence,
                  collections.abc.Iterable, collections.abc.Collection,
                  collections.abc.MutableSequence) or tp in (list, tuple, set):
        if not isinstance(value, list):
            return False
        if args and args[0] is not Ellipsis and not (origin is tuple and len(args) > 1
                                                      and args[1] is not Ellipsis):
            return all(_conforms(v, args[0]) for v in value)
        return True
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping) or tp in (
        dict, collections.abc.Mapping
    ):
        return isinstance(value, dict)
    return True


@functools.lru_cache(maxsize=256)
def _hints(func: Callable) -> dict[str, Any]:
    target = getattr(func, "__func__", func)
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: check names only
        return {}


def _bind(func: Callable, params: dict | list, method: str,
          skip: int = 0) -> inspect.BoundArguments:
    """Bind JSON-RPC ``params`` to ``func``'s signature and check the JSON types.

    Raises
    ------
    _RpcError
        ``-32602`` naming the parameter when the params do not bind or a value has the wrong
        JSON type for the parameter's annotation.
    """
    sig = inspect.signature(func)
    try:
        bound = sig.bind(*params) if isinstance(params, list) else sig.bind(**params)
    except TypeError as exc:
        raise _RpcError(INVALID_PARAMS, f"invalid params for {method}: {exc}") from None
    raw = getattr(func, "func", func)  # functools.partial
    hints = _hints(getattr(raw, "__func__", raw))
    for name, value in bound.arguments.items():
        param = sig.parameters[name]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        tp = hints.get(name, inspect.Parameter.empty)
        if not _conforms(value, tp):
            raise _RpcError(
                INVALID_PARAMS,
                f"invalid params for {method}: {name} must be {_type_name(tp)}, "
                f"got {type(value).__name__ if value is not None else 'null'}",
                {"param": name},
            )
    return bound


# ---------------------------------------------------------------------------------- lock
class DaemonLock:
    """An exclusive, non-blocking ``flock`` on ``<data dir>/daemon.lock``: one daemon per library.

    The lock dies with the process (even after ``kill -9``), so a stale lock file never
    blocks a new daemon. The file holds JSON ``{"pid", "socket", "tcp", "started_at"}`` while
    it is held and is emptied on release.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises
        ------
        DaemonError
            "a daemon is already running (pid N, socket ...)" when another process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_fd(fd)
        except OSError:
            os.close(fd)
            info = _read_info_at(self.path) or {}
            where = info.get("socket") or info.get("tcp") or "unknown address"
            raise DaemonError(
                f"a daemon is already running (pid {info.get('pid', '?')}, socket {where}); "
                "stop it with `deejai stop`"
            ) from None
        self._fd = fd

    def write(self, info: dict[str, Any]) -> None:
        """Record ``info`` (pid, addresses) for clients and a second ``deejai serve``."""
        if self._fd is None:
            raise DaemonError("the daemon lock is not held")
        data = (_dumps(info) + "\n").encode("utf-8")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def release(self) -> None:
        """Empty the file and drop the lock (the file stays, to avoid unlink races)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # pragma: no cover
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "DaemonLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_info_at(path: Path) -> dict[str, Any] | None:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
        info = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by this user only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _probe_unix(path: str, timeout: float = 0.5) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation, ``sd_listen_fds``), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if n < 1:
        return None
    sock = socket.socket(fileno=3)  # SD_LISTEN_FDS_START
    sock.setblocking(False)
    return sock


# ---------------------------------------------------------------------------------- server
class _Connection:
    """One client connection: a reader loop, request tasks, and a writer draining a queue."""

    _ids = itertools.count(1)

    def __init__(self, server: "Server", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, needs_auth: bool, label: str):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.authenticated = not needs_auth
        self.label = f"#{next(self._ids)} {label}"
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue(server.queue_size)
        self.inflight = asyncio.Semaphore(server.max_in_flight)
        self.tasks: set[asyncio.Task] = set()
        self.events: frozenset[str] | None = None  # None: not subscribed; empty: all events
        self.closed = False
        self.dropped = 0
        self.writer_task: asyncio.Task | None = None

    # -- output
    async def send(self, line: str) -> None:
        """Queue a reply line, waiting for room (back pressure on this connection only)."""
        if not self.closed:
            await self.out.put(line.encode("utf-8") + b"\n")

    def notify(self, event: str, line: bytes) -> None:
        """Queue a notification without waiting; see the module docstring for overflow."""
        if self.closed:
            return
        try:
            self.out.put_nowait(line)
        except asyncio.QueueFull:
            if event == "scan.progress":
                self.dropped += 1
                return
            log.warning("connection %s: outgoing queue full, disconnecting", self.label)
            self.abort()

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self.out.get()
                if item is None:
                    break
                self.writer.write(item)
                if self.out.empty() or self.writer.transport.get_write_buffer_size() > (1 << 20):
                    await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("connection %s: peer does not read, disconnecting", self.label)
            self.abort()
        except (ConnectionError, OSError):
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (unsent lines are lost)."""
        self.closed = True
        try:
            self.writer.transport.abort()
        except Exception:  # pragma: no cover - already gone
            pass
        current = asyncio.current_task()
        for task in list(self.tasks):  # requests blocked on a full queue would wait forever
            if task is not current:
                task.cancel()
        if self.writer_task is not None and self.writer_task is not asyncio.current_task():
            self.writer_task.cancel()

    # -- input
    async def run(self) -> None:
        self.writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.tasks and not self.closed:
                # The peer may have half-closed after its last request: answer it first.
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.close()

    async def _read_chunk(self, deadline: float | None) -> bytes:
        if deadline is None:
            return await self.reader.read(_READ_CHUNK)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(self.reader.read(_READ_CHUNK), remaining)

    async def _read_loop(self) -> None:
        limit = self.server.max_line_bytes
        buf = bytearray()
        discarding = False
        deadline = None if self.authenticated else time.monotonic() + self.server.auth_timeout_s
        while not self.closed:
            try:
                chunk = await self._read_chunk(None if self.authenticated else deadline)
            except asyncio.TimeoutError:
                await self.send(_error_line(None, UnauthorisedError.code,
                                            "unauthorised: no engine.auth within "
                                            f"{self.server.auth_timeout_s:g} s"))
                return
            if not chunk:
                return
            buf += chunk
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = bytes(buf[start:nl])
                start = nl + 1
                if discarding:  # the tail of an oversized line
                    discarding = False
                    continue
                if len(line) > limit:
                    await self._too_long()
                    continue
                if not line.strip():
                    continue
                if not self.authenticated:
                    if not await self._authenticate(line):
                        return
                    continue
                await self.inflight.acquire()
                if self.closed:
                    self.inflight.release()
                    return
                task = asyncio.create_task(self._handle(line))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            del buf[:start]
            if len(buf) > limit:
                if not discarding:
                    await self._too_long()
                discarding = True
                buf.clear()

    async def _too_long(self) -> None:
        log.info("connection %s: line over %d bytes discarded", self.label,
                 self.server.max_line_bytes)
        await self.send(_error_line(
            None, INVALID_REQUEST,
            f"request line longer than {self.server.max_line_bytes} bytes; it was discarded",
            {"limit_bytes": self.server.max_line_bytes},
        ))

    async def _authenticate(self, line: bytes) -> bool:
        rid: Any = None
        ok = False
        try:
            msg = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
            if isinstance(msg, dict):
                rid = msg.get("id") if isinstance(msg.get("id"), (str, int, float)) else None
                params = msg.get("params")
                token = params.get("token") if isinstance(params, dict) else (
                    params[0] if isinstance(params, list) and params else None)
                ok = (msg.get("method") == "engine.auth" and isinstance(token, str)
                      and secrets.compare_digest(token.encode("utf-8"),
                                                 self.server.token.encode("utf-8")))
        except (ValueError, UnicodeDecodeError, RecursionError):
            ok = False
        if ok:
            self.authenticated = True
            await self.send(f'{{"jsonrpc":"2.0","id":{_dumps(rid)},"result":true}}')
            return True
        log.warning("connection %s: unauthorised", self.label)
        await self.send(_error_line(rid, UnauthorisedError.code,
                                    "unauthorised: call engine.auth with the daemon's token first"))
        return False

    async def _handle(self, line: bytes) -> None:
        try:
            reply = await self.server.handle_line(line, self)
            if reply is not None:
                await self.send(reply)
        finally:
            self.inflight.release()

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``timeout`` seconds), then close the socket."""
        self.server._connections.discard(self)
        if not self.closed:
            self.closed = True
            try:
                self.out.put_nowait(None)
            except asyncio.QueueFull:
                self.abort()
            if self.writer_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.writer_task), timeout)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    self.abort()
        if self.writer_task is not None and not self.writer_task.done():
            self.writer_task.cancel()
        try:
            self.writer.close()
        except Exception:  # pragma: no cover
            pass
        if self.dropped:
            log.info("connection %s: %d progress notifications dropped", self.label,
                     self.dropped)
        log.debug("connection %s closed", self.label)


class Server:
    """The JSON-RPC 2.0 server around an Engine.

    Parameters
    ----------
    engine : Engine-like
        The facade (:class:`deejai.engine.service.Engine`); its methods named in ``methods``
        are served, called from a thread pool.
    socket_path : str or Path, optional
        Listen on this Unix socket (created 0600, its folder 0700; a stale socket is
        replaced when nothing answers on it).
    tcp : str or Address, optional
        Listen on ``HOST:PORT`` (loopback only; port 0 picks a free one). Connections must
        authenticate with ``token``.
    token : str, optional
        The TCP token; default: a new ``secrets.token_urlsafe(32)``.
    methods : dict, optional
        Wire name -> Engine method name; default
        :data:`deejai.engine.service.RPC_METHODS`.
    threads : int, optional
        Size of the thread pool for Engine calls (default 8).
    sock : socket.socket, optional
        An already listening socket (systemd socket activation); it is not unlinked on exit.
    max_line_bytes, queue_size, max_in_flight, auth_timeout_s
        Limits; see the module constants.

    Notes
    -----
    :meth:`run` blocks until SIGTERM, SIGINT, ``engine.shutdown`` or :meth:`request_stop`.
    Closing the Engine (which cancels a scan, committing what it finished) is the caller's
    job; :func:`serve` does it.
    """

    def __init__(
        self,
        engine: Any,
        *,
        socket_path: str | os.PathLike | None = None,
        tcp: str | Address | None = None,
        token: str | None = None,
        methods: dict[str, str] | None = None,
        threads: int | None = None,
        sock: socket.socket | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        queue_size: int = QUEUE_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
    ) -> None:
        if socket_path is None and tcp is None and sock is None:
            raise ConfigError("the server needs a socket path, a TCP address or a socket")
        self.engine = engine
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.tcp = tcp if isinstance(tcp, Address) or tcp is None else parse_address(tcp, tcp=True)
        self.token = token or secrets.token_urlsafe(32)
        if methods is None:
            from deejai.engine.service import RPC_METHODS as methods  # noqa: N811
        self.methods = {k: v for k, v in dict(methods).items() if k not in BUILTIN_METHODS}
        self.plugin_methods = _plugin_rpc_methods(set(self.methods) | set(BUILTIN_METHODS))
        self.max_line_bytes = int(max_line_bytes)
        self.queue_size = int(queue_size)
        self.max_in_flight = int(max_in_flight)
        self.auth_timeout_s = float(auth_timeout_s)
        self._sock = sock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads or 8, thread_name_prefix="deejai-rpc"
        )
        self._connections: set[_Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._bound_unix: str | None = None
        self.tcp_address: Address | None = None
        self.started = threading.Event()
        self._builtins: dict[str, Callable] = {
            "engine.auth": self._rpc_auth,
            "engine.ping": self._rpc_ping,
            "engine.subscribe": self._rpc_subscribe,
            "engine.unsubscribe": self._rpc_unsubscribe,
            "engine.shutdown": self._rpc_shutdown,
        }

    # -- built-in methods (called on the event loop; they must not block)
    def _rpc_auth(self, conn: _Connection, token: str) -> bool:
        """Authenticate (TCP); on a Unix socket any token is accepted."""
        return True

    def _rpc_ping(self, conn: _Connection) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "version": _version(),
                "protocol": PROTOCOL_VERSION}

    def _rpc_subscribe(self, conn: _Connection, events: list[str] | None = None) -> dict[str, Any]:
        conn.events = frozenset(events or ())
        return {"subscribed": sorted(conn.events) or ["*"]}

    def _rpc_unsubscribe(self, conn: _Connection) -> dict[str, Any]:
        was = conn.events is not None
        conn.events = None
        return {"unsubscribed": was}

    def _rpc_shutdown(self, conn: _Connection) -> dict[str, Any]:
        log.info("shutdown requested by connection %s", conn.label)
        assert self._loop is not None
        self._loop.call_soon(self.request_stop)
        return {"stopping": True, "pid": os.getpid()}

    # -- dispatch
    @property
    def methods_list(self) -> list[str]:
        return sorted([*self.methods, *BUILTIN_METHODS])

    async def handle_line(self, line: bytes, conn: _Connection) -> str | None:
        """Answer one line: a request, a notification or a batch; None when nothing to send."""
        try:
            msg = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            return _error_line(None, PARSE_ERROR, f"parse error: {reason}")
        if isinstance(msg, list):
            if not msg:
                return _error_line(None, INVALID_REQUEST, "invalid request: empty batch")
            if len(msg) > MAX_BATCH:
                return _error_line(None, INVALID_REQUEST,
                                   f"invalid request: batch of {len(msg)}; at most {MAX_BATCH}")
            replies = await asyncio.gather(*(self._handle_request(m, conn) for m in msg))
            parts = [r for r in replies if r is not None]
            return "[" + ",".join(parts) + "]" if parts else None
        return await self._handle_request(msg, conn)

    async def _handle_request(self, msg: Any, conn: _Connection) -> str | None:
        if not isinstance(msg, dict):
            return _error_line(None, INVALID_REQUEST, "invalid request: not a JSON object")
        rid = msg.get("id", _MISSING)
        id_ok = rid is _MISSING or rid is None or isinstance(rid, str) or (
            isinstance(rid, (int, float)) and not isinstance(rid, bool))
        reply_id = rid if id_ok and rid is not _MISSING else None
        if msg.get("jsonrpc") != "2.0":
            return _error_line(reply_id, INVALID_REQUEST,
                               'invalid request: "jsonrpc" must be "2.0"')
        if not id_ok:
            return _error_line(None, INVALID_REQUEST,
                               "invalid request: id must be a string, a number or null")
        method = msg.get("method")
        if not isinstance(method, str):
            return _error_line(reply_id, INVALID_REQUEST,
                               'invalid request: "method" must be a string')
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, (dict, list)):
            return _error_line(reply_id, INVALID_REQUEST,
                               'invalid request: "params" must be an object or an array')
        t0 = time.perf_counter()
        try:
            result = await self._invoke(method, params, conn)
        except _RpcError as exc:
            line = _error_line(reply_id, exc.code, exc.message, exc.data)
        except DeejaiError as exc:
            try:
                data = exc.data()
            except Exception:  # pragma: no cover - a broken data() must not kill the reply
                data = None
            line = _error_line(reply_id, exc.code, str(exc), data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error in %s", method)
            line = _error_line(reply_id, INTERNAL_ERROR,
                               f"internal error: {type(exc).__name__}: {exc}")
        else:
            line = f'{{"jsonrpc":"2.0","id":{_dumps(reply_id)},"result":{result}}}'
        log.debug("%s %s %.1f ms", conn.label, method, 1000 * (time.perf_counter() - t0))
        return None if rid is _MISSING else line

    async def _invoke(self, method: str, params: dict | list, conn: _Connection) -> str:
        """Run ``method``; returns the result as JSON text."""
        builtin = self._builtins.get(method)
        if builtin is not None:
            func = functools.partial(builtin, conn)
            bound = _bind(func, params, method)
            return _dumps(func(*bound.args, **bound.kwargs))
        name = self.methods.get(method)
        func = getattr(self.engine, name, None) if name else None
        if func is None and method in self.plugin_methods:
            func = functools.partial(self.plugin_methods[method], self.engine)
        if func is None:
            raise _RpcError(METHOD_NOT_FOUND, f"method not found: {method!r}",
                            {"method": method})
        bound = _bind(func, params, method)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: _dumps(func(*bound.args, **bound.kwargs))
        )

    # -- events
    def _on_event(self, event: str, params: dict[str, Any]) -> None:
        """Engine callback (any thread): hand the event to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            line = (_dumps({"jsonrpc": "2.0", "method": event, "params": params}) + "\n").encode()
        except (TypeError, ValueError):
            log.exception("event %s is not JSON serialisable", event)
            return
        try:
            loop.call_soon_threadsafe(self._broadcast, event, line)
        except RuntimeError:  # loop closed meanwhile
            pass

    def _broadcast(self, event: str, line: bytes) -> None:
        for conn in list(self._connections):
            if conn.events is not None and (not conn.events or event in conn.events):
                conn.notify(event, line)

    # -- lifetime
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          *, needs_auth: bool) -> None:
        peer = writer.get_extra_info("peername")
        label = f"tcp {peer[0]}:{peer[1]}" if needs_auth and peer else "unix"
        conn = _Connection(self, reader, writer, needs_auth=needs_auth, label=label)
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.write((_error_line(None, DaemonError.code,
                                      f"too many connections (at most {MAX_CONNECTIONS})")
                          + "\n").encode())
            writer.close()
            return
        self._connections.add(conn)
        log.debug("connection %s opened", conn.label)
        try:
            await conn.run()
        except asyncio.CancelledError:
            conn.abort()
        except Exception:  # pragma: no cover - defensive: never let one client kill the loop
            log.exception("connection %s failed", conn.label)
            conn.abort()
        finally:
            self._connections.discard(conn)

    def _bind_unix(self, path: str) -> socket.socket:
        parent = Path(path).parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
            os.chmod(parent, 0o700)
        if os.path.lexists(path):
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):
                raise ConfigError(f"{path} exists and is not a socket; remove it or choose "
                                  "another --socket")
            if _probe_unix(path):
                raise DaemonError(f"another process already answers on {path}")
            log.info("removing stale socket %s", path)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window with looser modes
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        self._bound_unix = path
        return sock

    async def start(self) -> None:
        """Bind the listeners and subscribe to the Engine's events."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._sock is not None:
            needs_auth = self._sock.family != getattr(socket, "AF_UNIX", None)
            if needs_auth:
                srv = await asyncio.start_server(
                    functools.partial(self._on_connect, needs_auth=True), sock=self._sock,
                    limit=_READ_CHUNK)
            else:
                srv = await asyncio.start_unix_server(
                    functools.partial(self._on_connect, needs_auth=False), sock=self._sock,
                    limit=_READ_CHUNK)
            self._servers.append(srv)
        if self.socket_path is not None:
            sock = self._bind_unix(self.socket_path)
            self._servers.append(await asyncio.start_unix_server(
                functools.partial(self._on_connect, needs_auth=False), sock=sock,
                limit=_READ_CHUNK))
        if self.tcp is not None:
            try:
                srv = await asyncio.start_server(
                    functools.partial(self._on_connect, needs_auth=True),
                    host=self.tcp.host, port=self.tcp.port, limit=_READ_CHUNK)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.tcp}: {exc.strerror or exc}") from None
            self._servers.append(srv)
            host, port = srv.sockets[0].getsockname()[:2]
            self.tcp_address = Address("tcp", host=host, port=port)
        subscribe = getattr(self.engine, "subscribe", None)
        if callable(subscribe):
            self._unsubscribe = subscribe(self._on_event)
        for addr in self.addresses:
            log.info("listening on %s", addr)
        self.started.set()

    @property
    def addresses(self) -> list[str]:
        out = []
        if self._bound_unix:
            out.append(self._bound_unix)
        if self.tcp_address is not None:
            out.append(str(self.tcp_address))
        return out

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe; also wired to SIGTERM and SIGINT)."""
        loop, stop = self._loop, self._stop
        if loop is None or stop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stop.set()
        else:
            loop.call_soon_threadsafe(stop.set)

    async def serve_forever(self) -> None:
        """Start (unless :meth:`start` ran), serve until asked to stop, then close every
        connection and listener."""
        if not self.started.is_set():
            await self.start()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            assert self._stop is not None
            await self._stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close()

    def _on_signal(self, sig: int) -> None:
        log.info("received %s, shutting down", signal.Signals(sig).name)
        self.request_stop()

    async def _close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for srv in self._servers:
            srv.close()
        conns = list(self._connections)
        for conn in conns:
            for task in list(conn.tasks):
                task.cancel()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._servers.clear()
        if self._bound_unix:
            try:
                os.unlink(self._bound_unix)
            except FileNotFoundError:
                pass
            self._bound_unix = None

    def run(self) -> None:
        """Serve until stopped, then wait for running Engine calls to end."""
        try:
            asyncio.run(self.serve_forever())
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)


def serve(
    socket_path: str | os.PathLike | None = None,
    tcp: str | None = None,
    *,
    engine_factory: Callable[[], Any] | None = None,
    paths: Paths | None = None,
    on_ready: Callable[[Server], None] | None = None,
) -> None:
    """Run the daemon in this process until SIGTERM, SIGINT or ``engine.shutdown``.

    Parameters
    ----------
    socket_path : str or path, optional
        Unix socket; default ``paths().socket_file`` unless only ``tcp`` is given.
    tcp : str, optional
        ``HOST:PORT`` on a loopback address; the token goes to :func:`token_file` (0600).
    engine_factory : callable, optional
        Builds the Engine once the lock is held; default
        :class:`deejai.engine.service.Engine`.
    paths : Paths, optional
        The folders; default :func:`deejai.engine.config.paths`.
    on_ready : callable, optional
        Called with the server once it listens (from the server's thread).

    Raises
    ------
    DaemonError
        When another daemon already serves this library ("a daemon is already running (pid
        N, socket ...)"), or something else answers on the socket.
    ConfigError
        When an address is invalid or cannot be bound.

    Notes
    -----
    Shutdown order: stop accepting, close connections, remove the socket and the token
    file, wait for running calls, close the Engine (a running scan is cancelled and what it
    finished is committed), then release the lock.
    """
    p = (paths or default_paths()).ensure()
    tcp_addr = parse_address(tcp, tcp=True) if tcp else None
    activated = _systemd_socket()
    if socket_path is None and tcp_addr is None and activated is None:
        socket_path = p.socket_file
    lock = DaemonLock(lock_file(p))
    lock.acquire()
    engine = None
    tok_path: Path | None = None
    try:
        if engine_factory is None:
            from deejai.engine.service import Engine

            engine_factory = lambda: Engine(paths=p)  # noqa: E731
        engine = engine_factory()
        token = secrets.token_urlsafe(32)
        server = Server(engine, socket_path=socket_path, tcp=tcp_addr, token=token,
                        sock=activated)

        async def main() -> None:
            nonlocal tok_path
            await server.start()
            if server.tcp_address is not None:
                tok_path = token_file(p)
                _write_private(tok_path, token + "\n")
            socket_shown = server._bound_unix or (
                activated.getsockname() if activated is not None else None)
            lock.write({"pid": os.getpid(), "socket": socket_shown if isinstance(
                socket_shown, str) else None, "tcp": str(server.tcp_address)
                if server.tcp_address else None, "started_at": time.time()})
            if on_ready is not None:
                on_ready(server)
            await server.serve_forever()

        try:
            asyncio.run(main())
        finally:
            if tok_path is not None:
                try:
                    tok_path.unlink()
                except FileNotFoundError:
                    pass
            server._executor.shutdown(wait=True, cancel_futures=True)
    finally:
        if engine is not None:
            log.info("closing the engine")
            try:
                engine.close()
            except Exception:
                log.exception("closing the engine failed")
        lock.release()
        log.info("daemon stopped")


# ---------------------------------------------------------------------------------- client
def _abs_if_exists(spec: Any) -> Any:
    """A track spec that names an existing relative path becomes absolute (the daemon's
    working folder is not the client's)."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str) and not spec.startswith("tag:") and os.path.exists(spec):
        return os.path.abspath(spec)
    return spec


class Client:
    """A connection to the daemon with the Engine's methods, parameters and results.

    Create one with :meth:`connect` (or :meth:`connect_or_none`). Calls are synchronous and
    thread-safe; a background thread reads the socket and hands replies to their callers and
    notifications to :meth:`subscribe` callbacks (on a separate dispatcher thread, so a
    callback may call the client) and to :meth:`events` iterators.

    Errors the daemon reports are raised as the same
    :class:`~deejai.engine.errors.DeejaiError` subclasses the Engine raises
    (:func:`~deejai.engine.errors.error_from_code`); protocol errors and a lost connection
    raise :class:`~deejai.engine.errors.DaemonError`.

    Examples
    --------
    >>> with Client.connect() as client:                       # doctest: +SKIP
    ...     playlist = client.join(waypoints=["battle epic", "ambient 4"], n=8)
    """

    def __init__(self, sock: socket.socket, address: str, *, timeout: float | None = None):
        self._sock = sock
        self.address = address
        #: Default seconds to wait for a reply (None: wait until the connection closes).
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sub_lock = threading.Lock()
        self._callbacks: list[Callable[[str, dict], None]] = []
        self._queues: list[queue.Queue] = []
        self._server_subscribed = False
        self._dispatch_q: queue.Queue | None = None
        self._dispatcher: threading.Thread | None = None
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="deejai-rpc-client",
                                        daemon=True)
        self._reader.start()

    # -- connecting
    @classmethod
    def connect(cls, address: str | os.PathLike | None = None, *, timeout: float = 5.0,
                token: str | None = None) -> "Client":
        """Connect to the daemon and check that it answers.

        Parameters
        ----------
        address : str or path, optional
            A socket path or ``tcp://127.0.0.1:PORT``; default: :func:`candidate_addresses`
            (``DEEJAI_SOCKET``, the default socket, what the lock file records).
        timeout : float
            Seconds to wait for the connection and for the first reply (``engine.ping``).
        token : str, optional
            TCP token; default ``DEEJAI_TOKEN``, else the daemon's token file.

        Raises
        ------
        DaemonError
            When no daemon answers at any candidate address.
        UnauthorisedError
            When a TCP daemon refuses the token.
        """
        addresses = [os.fspath(address)] if address is not None else candidate_addresses()
        failures = []
        for addr in addresses:
            try:
                return cls._connect_one(addr, timeout=timeout, token=token)
            except UnauthorisedError:
                raise
            except DaemonError as exc:
                failures.append(str(exc))
        tried = "; ".join(failures) or "no address"
        raise DaemonError(f"no deejai daemon answers ({tried}); start one with `deejai serve`")

    @classmethod
    def connect_or_none(cls, address: str | os.PathLike | None = None, *,
                        timeout: float = 2.0, token: str | None = None) -> "Client | None":
        """Like :meth:`connect`, but None when no daemon answers (the CLI then runs the
        Engine in process). A refused token still raises :class:`UnauthorisedError`."""
        try:
            return cls.connect(address, timeout=timeout, token=token)
        except UnauthorisedError:
            raise
        except DaemonError:
            return None

    @classmethod
    def _connect_one(cls, addr: str, *, timeout: float, token: str | None) -> "Client":
        try:
            parsed = parse_address(addr)
        except ConfigError as exc:
            raise DaemonError(f"{addr}: {exc}") from None
        try:
            if parsed.kind == "unix":
                if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows
                    raise DaemonError(f"{addr}: Unix sockets are not available here")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(parsed.path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((parsed.host, parsed.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise DaemonError(f"{addr}: {exc.strerror or exc}") from None
        sock.settimeout(None)
        client = cls(sock, str(parsed))
        try:
            if parsed.kind == "tcp":
                tok = token or os.environ.get("DEEJAI_TOKEN") or _read_token()
                if not tok:
                    raise UnauthorisedError(
                        f"{addr}: no token; set DEEJAI_TOKEN or run on the daemon's machine "
                        f"(token file {token_file()})")
                try:
                    client.call("engine.auth", {"token": tok}, timeout=timeout)
                except DaemonError as exc:
                    if isinstance(exc, UnauthorisedError) or "unauthorised" in str(exc):
                        raise UnauthorisedError(f"{addr}: the daemon refused the token") from None
                    raise
            client.call("engine.ping", timeout=timeout)
        except BaseException:
            client.close()
            raise
        return client

    # -- plumbing
    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side)."""
        return self._closed.is_set()

    def call(self, method: str, params: dict | list | None = None, *,
             timeout: float | None = None) -> Any:
        """Send one request and return its result.

        Parameters
        ----------
        method : str
            Wire name, e.g. ``"playlist.join"``.
        params : dict or list, optional
            Named (or positional) parameters.
        timeout : float, optional
            Seconds to wait; default :attr:`timeout`.

        Raises
        ------
        DeejaiError
            The daemon's error, rebuilt as its class; :class:`DaemonError` when the
            connection is lost, the reply does not come in time, or the request is too big.
        """
        if self._closed.is_set():
            raise DaemonError(f"the connection to the daemon at {self.address} is closed")
        rid = next(self._ids)
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        try:
            data = _dumps(req).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DaemonError(f"{method}: parameters are not JSON serialisable ({exc})") from None
        if len(data) > MAX_LINE_BYTES:
            raise DaemonError(f"{method}: request of {len(data)} bytes is over the daemon's "
                              f"limit of {MAX_LINE_BYTES} bytes")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._pending_lock:
            self._pending[rid] = fut
        try:
            with self._send_lock:
                self._sock.sendall(data + b"\n")
        except OSError as exc:
            with self._pending_lock:
                self._pending.pop(rid, None)
            raise DaemonError(f"lost the connection to the daemon at {self.address}: "
                              f"{exc.strerror or exc}") from None
        wait = self.timeout if timeout is None else timeout
        try:
            reply = fut.result(wait)
        except concurrent.futures.TimeoutError:
            with self._pending_lock:
                self._pending.pop(rid, None)
            raise DaemonError(f"the daemon did not answer {method} within {wait:g} s") from None
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise error_from_code(int(err.get("code", DaemonError.code)),
                                  str(err.get("message", "unknown error")), err.get("data"))
        return reply.get("result")

    def _read_loop(self) -> None:
        f = self._sock.makefile("rb")
        try:
            for raw in f:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("daemon sent a line that is not JSON: %.80r", raw)
                    continue
                if not isinstance(msg, dict):
                    continue
                if "method" in msg and "id" not in msg:
                    self._deliver(str(msg["method"]), msg.get("params") or {})
                    continue
                rid = msg.get("id")
                with self._pending_lock:
                    fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
                    if fut is None and rid is None and "error" in msg and len(self._pending) == 1:
                        # an error the daemon could not tie to a request (e.g. auth timeout)
                        fut = self._pending.pop(next(iter(self._pending)))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif "error" in msg:
                    log.warning("daemon error: %s", msg["error"])
        except (OSError, ValueError):
            pass
        finally:
            self._closed.set()
            try:
                f.close()
            except OSError:  # pragma: no cover
                pass
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(DaemonError(
                        f"the daemon at {self.address} closed the connection"))
            with self._sub_lock:
                queues = list(self._queues)
                dq = self._dispatch_q
            for q in queues:
                q.put(None)
            if dq is not None:
                dq.put(None)

    def _deliver(self, event: str, params: dict) -> None:
        with self._sub_lock:
            queues = list(self._queues)
            dq = self._dispatch_q if self._callbacks else None
        for q in queues:
            q.put((event, params))
        if dq is not None:
            dq.put((event, params))

    def _dispatch_loop(self, dq: queue.Queue) -> None:
        while True:
            item = dq.get()
            if item is None:
                return
            with self._sub_lock:
                callbacks = list(self._callbacks)
            for cb in callbacks:
                try:
                    cb(*item)
                except Exception:
                    log.exception("event callback failed on %s", item[0])

    def _ensure_server_subscription(self) -> None:
        with self._sub_lock:
            need = not self._server_subscribed
            self._server_subscribed = True
        if need:
            try:
                self.call("engine.subscribe")
            except BaseException:
                with self._sub_lock:
                    self._server_subscribed = False
                raise

    def _maybe_unsubscribe_server(self) -> None:
        with self._sub_lock:
            idle = not self._callbacks and not self._queues and self._server_subscribed
            if idle:
                self._server_subscribed = False
        if idle and not self.closed:
            try:
                self.call("engine.unsubscribe")
            except DaemonError:
                pass

    # -- events
    def subscribe(self, callback: Callable[[str, dict], None]) -> Callable[[], None]:
        """Call ``callback(event, params)`` for each notification; returns an unsubscribe
        function. Callbacks run one at a time on a dispatcher thread, in arrival order."""
        with self._sub_lock:
            self._callbacks.append(callback)
            if self._dispatcher is None:
                self._dispatch_q = queue.Queue()
                self._dispatcher = threading.Thread(
                    target=self._dispatch_loop, args=(self._dispatch_q,),
                    name="deejai-rpc-events", daemon=True)
                self._dispatcher.start()
        self._ensure_server_subscription()

        def unsubscribe() -> None:
            with self._sub_lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
            self._maybe_unsubscribe_server()

        return unsubscribe

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, dict]]:
        """Subscribe now and return an iterator over ``(event, params)`` notifications.

        The subscription starts when this method returns (so call it before starting a scan
        to see all of its events). The iteration ends when the connection closes, or when no
        event arrives within ``timeout`` seconds (when given). Closing the iterator (or
        breaking out of a ``for`` loop over it) unsubscribes.
        """
        q: queue.Queue = queue.Queue()
        with self._sub_lock:
            self._queues.append(q)
        try:
            self._ensure_server_subscription()
        except BaseException:
            self._drop_queue(q)
            raise
        return self._iter_events(q, timeout)

    def _drop_queue(self, q: queue.Queue) -> None:
        with self._sub_lock:
            if q in self._queues:
                self._queues.remove(q)
        self._maybe_unsubscribe_server()

    def _iter_events(self, q: queue.Queue, timeout: float | None) -> Iterator[tuple[str, dict]]:
        try:
            while not (self.closed and q.empty()):
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is None:
                    return
                yield item
        finally:
            self._drop_queue(q)

    def wait_scan(self, job: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until scan ``job`` ends (or ``timeout`` seconds pass); returns its status.

        The same as ``Engine.wait_scan``: woken by the daemon's scan notifications, and
        checking the job's state at least once a second in case one was dropped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        q: queue.Queue = queue.Queue()
        with self._sub_lock:
            self._queues.append(q)
        try:
            self._ensure_server_subscription()
            while True:
                status = self.scan_status(job)
                if status.get("state") != "running":
                    return status
                wait = 1.0
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return status
                try:
                    if q.get(timeout=wait) is None:
                        return self.scan_status(job)  # raises: the connection is closed
                except queue.Empty:
                    pass
        finally:
            self._drop_queue(q)

    # -- the daemon itself
    def ping(self) -> dict[str, Any]:
        """``{"pong": true, "pid", "version", "protocol"}``."""
        return self.call("engine.ping")

    def shutdown(self) -> dict[str, Any]:
        """Ask the daemon to stop (it cancels a running scan, committing what it finished)."""
        return self.call("engine.shutdown")

    # -- the Engine facade (same names, parameters and results)
    def scan(self, paths: Sequence[str] | None = None, workers: int | None = None,
             retry_errors: bool = False, patches: int | None = None) -> dict[str, Any]:
        """Start a scan in the daemon; returns ``{"job": id}`` (see ``Engine.scan``)."""
        if paths is not None:
            paths = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        return self.call("library.scan", {"paths": paths, "workers": workers,
                                          "retry_errors": retry_errors, "patches": patches})

    def scan_status(self, job: str | None = None) -> dict[str, Any]:
        """State of scan ``job`` (default: the latest); see ``Engine.scan_status``."""
        return self.call("library.scan_status", {"job": job})

    def cancel_scan(self, job: str | None = None) -> dict[str, Any]:
        """Ask a running scan to stop; see ``Engine.cancel_scan``."""
        return self.call("library.cancel_scan", {"job": job})

    def tracks(self, query: str | None = None, limit: int | None = 50,
               errors: bool = False) -> list[dict[str, Any]]:
        """Tracks matching ``query``; see ``Engine.tracks``."""
        return self.call("library.tracks", {"query": query, "limit": limit, "errors": errors})

    def track(self, track: str | int) -> dict[str, Any]:
        """One track's record; see ``Engine.track``."""
        return self.call("library.track", {"track": _abs_if_exists(track)})

    def resolve(self, track: str | int) -> dict[str, Any]:
        """The track a path, id or query names; see ``Engine.resolve``."""
        return self.call("library.resolve", {"track": _abs_if_exists(track)})

    def join(self, waypoints: Sequence[str | int], n: int = 8, noise: float = 0.0,
             seed: int | None = None, no_repeat_artist: bool = False,
             max_duration_s: float | None = None, transitions: bool = False) -> dict[str, Any]:
        """Join the dots through ``waypoints``; see ``Engine.join``."""
        return self.call("playlist.join", {
            "waypoints": [_abs_if_exists(w) for w in waypoints], "n": n, "noise": noise,
            "seed": seed, "no_repeat_artist": no_repeat_artist,
            "max_duration_s": max_duration_s, "transitions": transitions})

    def radio(self, seeds: Sequence[str | int], n: int = 20, lookback: int = 3,
              noise: float = 0.0, seed: int | None = None, no_repeat_artist: bool = False,
              max_duration_s: float | None = None) -> dict[str, Any]:
        """A radio playlist from ``seeds``; see ``Engine.radio``."""
        return self.call("playlist.radio", {
            "seeds": [_abs_if_exists(s) for s in seeds], "n": n, "lookback": lookback,
            "noise": noise, "seed": seed, "no_repeat_artist": no_repeat_artist,
            "max_duration_s": max_duration_s})

    def export(self, playlist: dict[str, Any], format: str | None = None,
               path: str | None = None) -> dict[str, Any]:
        """Render ``playlist``, to ``path`` (written by the daemon) or as text."""
        if path is not None:
            path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        return self.call("playlist.export", {"playlist": playlist, "format": format,
                                             "path": path})

    def status(self) -> dict[str, Any]:
        """Library statistics, index state, model and scan; see ``Engine.status``."""
        return self.call("engine.status")

    # -- lifetime
    def close(self) -> None:
        """Close the connection (pending calls fail with :class:`DaemonError`)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(2.0)
        with self._sub_lock:
            dq = self._dispatch_q
        if dq is not None:
            dq.put(None)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<deejai.engine.rpc.Client {self.address} {state}>"


def _read_token() -> str | None:
    try:
        return token_file().read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
