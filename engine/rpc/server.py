"""The daemon's lifetime: one lock per library, listeners, signals, an orderly shutdown.

:func:`serve` is ``deejai serve``: it takes the :class:`DaemonLock`, builds the Engine (and
what the composition root hands it: plugins' exporters, sinks and RPC methods), runs a
:class:`Server` until SIGTERM, SIGINT or ``engine.shutdown``, then closes everything in order.
The :class:`Server` binds the transports (:mod:`.transport`), accepts
:class:`~.connection.Connection` objects, and fans the Engine's events out to the subscribed
ones; what a line means is the :class:`~.dispatch.Dispatcher`'s business.

Nobody is locked out: a TCP connection that has not authenticated yet is not one of the
:data:`MAX_CONNECTIONS`; it is one of at most :data:`MAX_UNAUTHENTICATED` waiting ones, each
of which may send one short line (:data:`~.connection.AUTH_LINE_BYTES`) within
:data:`AUTH_TIMEOUT_S`. When a new one arrives and that many wait, the one that has waited
longest is closed (the owner's client sends its token at once, so it never waits long), and
failed attempts are rate-limited and logged per peer by an :class:`~.connection.AuthGuard`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from deejai.engine._fs import lock_exclusive, write_private
from deejai.engine.config import Paths, paths as default_paths
from deejai.engine.errors import ConfigError, DaemonError
from deejai.engine.methods import Method
from deejai.engine.rpc.connection import READ_CHUNK, AuthGuard, Connection
from deejai.engine.rpc.dispatch import Dispatcher
from deejai.engine.rpc.framing import (
    MAX_LINE_BYTES,
    dumps,
    encode_line,
    error_line,
    notification_line,
)
from deejai.engine.rpc.transport import (
    Address,
    bind_unix,
    check_activated_socket,
    lock_file,
    parse_address,
    read_info_at,
    systemd_socket,
    token_file,
)

__all__ = [
    "Server",
    "DaemonLock",
    "serve",
    "MAX_IN_FLIGHT",
    "QUEUE_SIZE",
    "AUTH_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_UNAUTHENTICATED",
]

log = logging.getLogger("deejai.engine.rpc")

#: Requests of one connection that may run at the same time; more wait (back pressure).
MAX_IN_FLIGHT = 16
#: Lines waiting to be written to one connection.
QUEUE_SIZE = 1000
#: Seconds a TCP connection has to authenticate.
AUTH_TIMEOUT_S = 5.0
#: Most connections at once (Unix socket, and TCP once authenticated); more are answered
#: with an error and closed.
MAX_CONNECTIONS = 256
#: Most TCP connections waiting to authenticate; a new one closes the one waiting longest.
MAX_UNAUTHENTICATED = 32


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
            lock_exclusive(fd)
        except OSError:
            os.close(fd)
            info = read_info_at(self.path) or {}
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
        data = (dumps(info) + "\n").encode("utf-8")
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


class Server:
    """The JSON-RPC 2.0 server around an Engine.

    Parameters
    ----------
    engine : Engine-like
        The facade (:class:`deejai.engine.service.Engine`); the methods of its table are
        served, called from a thread pool.
    socket_path : str or Path, optional
        Listen on this Unix socket (created 0600, its folder 0700; a stale socket is
        replaced when nothing answers on it).
    tcp : str or Address, optional
        Listen on ``HOST:PORT`` (loopback only; port 0 picks a free one). Connections must
        authenticate with ``token``.
    token : str, optional
        The TCP token; default: a new ``secrets.token_urlsafe(32)``.
    methods : dict, optional
        Wire name -> :class:`~deejai.engine.methods.Method`; default: the method table of
        ``type(engine)``.
    extra_methods : dict, optional
        Wire name -> ``callable(engine, **params)``: the plugins' RPC methods, handed over
        by the composition root (:func:`serve`'s caller).
    threads : int, optional
        Threads for the cheap Engine calls (default
        :data:`~deejai.engine.rpc.dispatch.LIGHT_THREADS`).
    heavy_threads : int, optional
        Threads for the heavy ones, playlists and searches (default
        :func:`~deejai.engine.rpc.dispatch.default_heavy_threads`).
    sock : socket.socket, optional
        An already listening socket (systemd socket activation); it is not unlinked on exit.
        A TCP one must be bound to a loopback address and needs the token like ``tcp``.
    max_line_bytes, queue_size, max_in_flight, auth_timeout_s, max_connections,
    max_unauthenticated
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
        methods: Mapping[str, Method] | None = None,
        extra_methods: Mapping[str, Callable[..., Any]] | None = None,
        threads: int | None = None,
        heavy_threads: int | None = None,
        sock: socket.socket | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        queue_size: int = QUEUE_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
    ) -> None:
        if socket_path is None and tcp is None and sock is None:
            raise ConfigError("the server needs a socket path, a TCP address or a socket")
        self.engine = engine
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.tcp = tcp if isinstance(tcp, Address) or tcp is None else parse_address(tcp, tcp=True)
        self.token = token or secrets.token_urlsafe(32)
        # the dispatcher's own thread pools; :meth:`Dispatcher.close` waits for them
        self.dispatcher = Dispatcher(engine, methods=methods, extra=extra_methods,
                                     threads=threads, heavy_threads=heavy_threads)
        self.max_line_bytes = int(max_line_bytes)
        self.queue_size = int(queue_size)
        self.max_in_flight = int(max_in_flight)
        self.auth_timeout_s = float(auth_timeout_s)
        self.max_connections = int(max_connections)
        self.max_unauthenticated = int(max_unauthenticated)
        #: Failed TCP authentications per peer host: answered or not, logged per interval.
        self.auth_guard = AuthGuard()
        self._sock = sock
        self._connections: set[Connection] = set()
        #: TCP connections waiting to authenticate, oldest first.
        self._pending: dict[Connection, None] = {}
        self._guard_task: asyncio.Task | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._bound_unix: str | None = None
        self.tcp_address: Address | None = None
        self.started = threading.Event()

    @property
    def methods_list(self) -> list[str]:
        """Every wire name the server answers, sorted."""
        return self.dispatcher.methods_list

    # -- events
    def _on_event(self, event: str, params: dict[str, Any]) -> None:
        """Engine callback (any thread): hand the event to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            line = (notification_line(event, params) + "\n").encode()
        except (TypeError, ValueError):
            log.exception("event %s is not JSON serialisable", event)
            return
        try:
            loop.call_soon_threadsafe(self._broadcast, event, line)
        except RuntimeError:  # loop closed meanwhile
            pass

    def _broadcast(self, event: str, line: bytes) -> None:
        for conn in list(self._connections):
            if conn.wants(event):
                conn.notify(event, line)

    # -- lifetime
    def _too_many(self) -> str:
        return f"too many connections (at most {self.max_connections})"

    def _count_authenticated(self) -> int:
        return len(self._connections) - len(self._pending)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          *, needs_auth: bool) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if needs_auth and isinstance(peer, tuple) and peer else ""
        label = f"tcp {peer[0]}:{peer[1]}" if host else "unix"
        conn = Connection(self, reader, writer, needs_auth=needs_auth, label=label, host=host)
        if needs_auth:
            # its own small budget: never one of the owner's MAX_CONNECTIONS slots
            while len(self._pending) >= self.max_unauthenticated:
                oldest = next(iter(self._pending))
                self._pending.pop(oldest)
                self._connections.discard(oldest)
                oldest.evict("unauthorised: too many connections waiting to authenticate; "
                             "this one waited longest")
            self._pending[conn] = None
        elif self._count_authenticated() >= self.max_connections:
            writer.write(encode_line(error_line(None, DaemonError.code, self._too_many())))
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
            self._pending.pop(conn, None)
            self._connections.discard(conn)

    def authenticated(self, conn: Connection) -> str | None:
        """A TCP connection gave the right token: make it one of the connections.

        Returns None, or why it is refused (the connections are all taken).
        """
        if conn not in self._pending:  # evicted meanwhile
            return "unauthorised: too many connections waiting to authenticate"
        self._pending.pop(conn)
        if self._count_authenticated() >= self.max_connections:
            self._connections.discard(conn)
            return self._too_many()
        return None

    async def _flush_auth_log(self) -> None:
        while True:
            await asyncio.sleep(self.auth_guard.log_interval_s)
            self.auth_guard.flush()

    async def _listen(self, sock: socket.socket, *, needs_auth: bool) -> None:
        handler = functools.partial(self._on_connect, needs_auth=needs_auth)
        if needs_auth:
            srv = await asyncio.start_server(handler, sock=sock, limit=READ_CHUNK)
        else:
            srv = await asyncio.start_unix_server(handler, sock=sock, limit=READ_CHUNK)
        self._servers.append(srv)

    async def start(self) -> None:
        """Bind the listeners and subscribe to the Engine's events."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._sock is not None:
            tcp = check_activated_socket(self._sock)
            await self._listen(self._sock, needs_auth=tcp is not None)
            if tcp is not None:
                self.tcp_address = tcp
        if self.socket_path is not None:
            sock = bind_unix(self.socket_path)
            self._bound_unix = self.socket_path
            await self._listen(sock, needs_auth=False)
        if self.tcp is not None:
            try:
                srv = await asyncio.start_server(
                    functools.partial(self._on_connect, needs_auth=True),
                    host=self.tcp.host, port=self.tcp.port, limit=READ_CHUNK)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.tcp}: {exc.strerror or exc}") from None
            self._servers.append(srv)
            host, port = srv.sockets[0].getsockname()[:2]
            self.tcp_address = Address("tcp", host=host, port=port)
        subscribe = getattr(self.engine, "subscribe", None)
        if callable(subscribe):
            self._unsubscribe = subscribe(self._on_event)
        if self.tcp_address is not None:
            self._guard_task = asyncio.create_task(self._flush_auth_log())
        for addr in self.addresses:
            log.info("listening on %s", addr)
        self.started.set()

    @property
    def addresses(self) -> list[str]:
        """The addresses this server listens on (Unix socket path, ``tcp://...``)."""
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

    def request_stop_soon(self) -> None:
        """:meth:`request_stop` once the current reply is queued (``engine.shutdown``)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.request_stop)

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
        if self._guard_task is not None:
            self._guard_task.cancel()
            self._guard_task = None
        self.auth_guard.flush()
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
            self.dispatcher.close()


def serve(
    socket_path: str | os.PathLike | None = None,
    tcp: str | None = None,
    *,
    engine_factory: Callable[[Paths], Any] | None = None,
    extra_methods: Mapping[str, Callable[..., Any]] | None = None,
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
        ``engine_factory(paths)`` builds the Engine once the lock is held; default
        ``Engine(paths=paths)`` with no exporters or sinks. The composition root
        (``deejai serve``) passes one that hands the Engine the plugins' exporters and sinks.
    extra_methods : dict, optional
        Wire name -> ``callable(engine, **params)``: RPC methods plugins add.
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
    activated = systemd_socket()
    if activated is not None:
        try:
            check_activated_socket(activated)  # before anything starts: one line, exit 1
        except ConfigError:
            activated.close()
            raise
    if socket_path is None and tcp_addr is None and activated is None:
        socket_path = p.socket_file
    lock = DaemonLock(lock_file(p))
    lock.acquire()
    engine = None
    tok_path: Path | None = None
    try:
        if engine_factory is None:
            from deejai.engine.service import Engine

            engine_factory = lambda p: Engine(paths=p)  # noqa: E731
        engine = engine_factory(p)
        token = secrets.token_urlsafe(32)
        server = Server(engine, socket_path=socket_path, tcp=tcp_addr, token=token,
                        sock=activated, extra_methods=extra_methods)

        async def main() -> None:
            nonlocal tok_path
            await server.start()
            if server.tcp_address is not None:
                tok_path = token_file(p)
                write_private(tok_path, token + "\n")
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
                tok_path.unlink(missing_ok=True)
            server.dispatcher.close()
    finally:
        if engine is not None:
            log.info("closing the engine")
            try:
                engine.close()
            except Exception:
                log.exception("closing the engine failed")
        lock.release()
        log.info("daemon stopped")
