"""The client: the Engine's methods, over a transport, with the Engine's errors.

:class:`Client` has no hand-written copy of the Engine's methods: ``client.join(...)`` is
found in the method table (:func:`deejai.engine.methods.method_table`) by its Python name and
sent under its wire name with the same parameters, so a method added to the Engine is
callable here at once. Errors the daemon reports are raised as the same
:class:`~deejai.engine.errors.DeejaiError` subclasses the Engine raises
(:func:`~deejai.engine.errors.error_from_code`); a connection that breaks raises
:class:`~deejai.engine.errors.ConnectionLost`.

A transport is anything with ``send(bytes)``, ``lines()`` (an iterator of received lines) and
``close()``: :class:`SocketTransport` over a Unix or TCP socket, or
:class:`~deejai.engine.rpc.dispatch.InProcessTransport` straight into a dispatcher.
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
from typing import Any, Callable, Iterator, Protocol

from deejai.engine.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionLost,
    DaemonError,
    DaemonNotRunning,
    error_from_code,
)
from deejai.engine.rpc.framing import MAX_LINE_BYTES, dumps
from deejai.engine.rpc.transport import (
    Address,
    candidate_addresses,
    open_socket,
    parse_address,
    read_token,
    token_file,
)

__all__ = ["Client", "Transport", "SocketTransport", "client_methods"]

log = logging.getLogger("deejai.engine.rpc")


class Transport(Protocol):
    """What a :class:`Client` sends through and reads from."""

    def send(self, data: bytes) -> None: ...

    def lines(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class SocketTransport:
    """A connected stream socket (Unix or TCP) carrying newline-delimited JSON."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def lines(self) -> Iterator[bytes]:
        f = self.sock.makefile("rb")
        try:
            yield from f
        except (OSError, ValueError):
            return
        finally:
            try:
                f.close()
            except OSError:  # pragma: no cover
                pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@functools.lru_cache(maxsize=1)
def client_methods() -> dict[str, Any]:
    """Python name -> method of the contract a client can call: the Engine's table and the
    built-in ``ping`` and ``shutdown``."""
    from deejai.engine.methods import by_attribute
    from deejai.engine.rpc.dispatch import BUILTIN_TABLE
    from deejai.engine.service import ENGINE_METHODS

    builtins = {k: v for k, v in BUILTIN_TABLE.items() if k in ("engine.ping", "engine.shutdown")}
    return by_attribute(ENGINE_METHODS, builtins)


@functools.lru_cache(maxsize=64)
def _signature(method: Any) -> inspect.Signature:
    sig = inspect.signature(method.func)
    skip = 1  # self (Engine methods) or the session (built-ins)
    return sig.replace(parameters=list(sig.parameters.values())[skip:])


class Client:
    """A connection to the daemon with the Engine's methods, parameters and results.

    Create one with :meth:`connect` (or use :func:`deejai.engine.connect`, which also starts
    a daemon or falls back to an in-process Engine). Calls are synchronous and thread-safe; a
    background thread reads replies and hands them to their callers, and notifications to
    :meth:`subscribe` callbacks (on a separate dispatcher thread, so a callback may call the
    client) and to :meth:`events` iterators.

    Examples
    --------
    >>> with Client.connect() as client:                       # doctest: +SKIP
    ...     playlist = client.join(waypoints=["battle epic", "ambient 4"], n=8)
    """

    #: The daemon process :func:`deejai.engine.connect` started for this client, if any.
    daemon_process: Any = None

    def __init__(self, transport: Transport | socket.socket, address: str, *,
                 timeout: float | None = None):
        if isinstance(transport, socket.socket):
            transport = SocketTransport(transport)
        self._transport = transport
        self.address = address
        #: Default seconds to wait for a reply (None: wait until the connection closes).
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._pending_lock = threading.Lock()
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
        DaemonNotRunning
            When no daemon answers at any candidate address.
        AuthenticationFailed
            When a TCP daemon refuses the token.
        """
        addresses = [os.fspath(address)] if address is not None else candidate_addresses()
        failures = []
        for addr in addresses:
            try:
                return cls._connect_one(addr, timeout=timeout, token=token)
            except DaemonNotRunning as exc:
                failures.append(str(exc))
        tried = "; ".join(failures) or "no address"
        raise DaemonNotRunning(f"no deejai daemon answers ({tried})")

    @classmethod
    def connect_or_none(cls, address: str | os.PathLike | None = None, *,
                        timeout: float = 2.0, token: str | None = None) -> "Client | None":
        """Like :meth:`connect`, but None when no daemon answers. A refused token still
        raises :class:`~deejai.engine.errors.AuthenticationFailed`."""
        try:
            return cls.connect(address, timeout=timeout, token=token)
        except DaemonNotRunning:
            return None

    @classmethod
    def _connect_one(cls, addr: str, *, timeout: float, token: str | None) -> "Client":
        try:
            parsed: Address = parse_address(addr)
        except ConfigError as exc:
            raise DaemonNotRunning(f"{addr}: {exc}") from None
        client = cls(open_socket(parsed, timeout=timeout), str(parsed))
        try:
            if parsed.kind == "tcp":
                tok = token or os.environ.get("DEEJAI_TOKEN") or read_token()
                if not tok:
                    raise AuthenticationFailed(
                        f"{addr}: no token (the daemon's token file is {token_file()})")
                try:
                    client.call("engine.auth", {"token": tok}, timeout=timeout)
                except AuthenticationFailed:
                    raise AuthenticationFailed(f"{addr}: the daemon refused the token") from None
            client.call("engine.ping", timeout=timeout)
        except ConnectionLost as exc:  # it accepted, then closed: not a daemon that serves
            client.close()
            raise DaemonNotRunning(f"{addr}: {exc}") from None
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
            The daemon's error, rebuilt as its class.
        ConnectionLost
            The connection is closed, or broke before the reply came.
        DaemonError
            The reply did not come in time, or the request is too big.
        """
        if self._closed.is_set():
            raise ConnectionLost(f"the connection to the daemon at {self.address} is closed")
        rid = next(self._ids)
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        try:
            data = dumps(req).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DaemonError(f"{method}: parameters are not JSON serialisable ({exc})") from None
        if len(data) > MAX_LINE_BYTES:
            raise DaemonError(f"{method}: request of {len(data)} bytes is over the daemon's "
                              f"limit of {MAX_LINE_BYTES} bytes")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._pending_lock:
            self._pending[rid] = fut
        try:
            self._transport.send(data + b"\n")
        except OSError as exc:
            with self._pending_lock:
                self._pending.pop(rid, None)
            raise ConnectionLost(f"lost the connection to the daemon at {self.address}: "
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

    def __getattr__(self, name: str) -> Any:
        """The contract's method ``name`` (``join``, ``tracks``, ``status``...), sent over the
        connection with the Engine's own parameters."""
        method = None if name.startswith("_") else client_methods().get(name)
        if method is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        sig = _signature(method)
        wire = method.name

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{name}(): {exc}") from None
            return self.call(wire, dict(bound.arguments) if bound.arguments else None)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = getattr(method.func, "__doc__", None)
        call.__signature__ = sig  # type: ignore[attr-defined]
        self.__dict__[name] = call  # found directly next time
        return call

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *client_methods()})

    def _read_loop(self) -> None:
        try:
            for raw in self._transport.lines():
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
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(
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

    # -- lifetime
    def close(self) -> None:
        """Close the connection (pending calls fail with :class:`ConnectionLost`)."""
        self._transport.close()
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
