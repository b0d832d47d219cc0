"""The dispatcher: a JSON-RPC line in, a JSON-RPC line out, over the method table.

:class:`Dispatcher` knows nothing of sockets. It parses one line (a request, a notification
or a batch), checks it, looks the method up (the built-in methods of the session, the Engine's
:func:`~deejai.engine.methods.method_table`, then the plugins' methods), checks the parameters
(:meth:`~deejai.engine.methods.Method.bind`), runs the call and turns the result or the
exception into the reply line. The server's connections (:mod:`.connection`) and the in-process
transport (:class:`InProcessTransport`, for tests and for embedding) both feed it lines.

Where calls run, so that one client cannot stall the others:

* built-in methods (``engine.ping``...) run on the event loop and answer at once;
* Engine calls block, so they run in threads: the cheap ones (``engine.status``,
  ``library.scan_status``...) in a small pool of their own, and the ones marked
  :attr:`~deejai.engine.methods.Method.heavy` (playlists, searches, plugins' methods) in the
  *heavy lane*, a :class:`FairLane` in front of its own pool: at most as many run as it has
  threads, and those waiting are taken from the connections in turn (round-robin), so a
  client with a thousand queued joins delays another client's join by one turn, not by a
  thousand;
* each request of a batch takes one of its connection's request slots
  (:attr:`Session.request_slots`), so a batch counts as its size, not as one line.

A :class:`Session` is what the built-in methods act on: one per connection (its subscription,
whether it authenticated, its request slots, a label for the log).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Hashable, Iterator, Mapping

from deejai.engine.errors import DeejaiError
from deejai.engine.methods import InvalidParams, Method, method_from_function, method_table
from deejai.engine.rpc.framing import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    dumps,
    encode_line,
    error_line,
    loads,
    notification_line,
    result_line,
)

__all__ = [
    "PROTOCOL_VERSION",
    "BUILTIN_METHODS",
    "BUILTIN_TABLE",
    "Session",
    "Dispatcher",
    "FairLane",
    "InProcessTransport",
    "plugin_methods",
    "contract",
    "LIGHT_THREADS",
    "default_heavy_threads",
]

log = logging.getLogger("deejai.engine.rpc")

#: Version of the protocol described in ``docs/protocol.md`` (reported by ``engine.ping``).
PROTOCOL_VERSION = 1
#: Threads for the cheap Engine calls (``engine.status``, ``library.scan_status``...).
LIGHT_THREADS = 4


def default_heavy_threads() -> int:
    """Threads of the heavy lane: the CPU cores this process may use, from 2 to 8.

    Playlists are CPU work under the GIL (NumPy releases it in places), so more threads than
    cores only make each call slower and the cheap calls wait longer for the interpreter.
    """
    from deejai.engine.pool import default_workers

    return max(2, min(8, default_workers()))

_MISSING = object()


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deejai")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class Session:
    """The state one client has in the daemon.

    Attributes
    ----------
    label : str
        For the log (``"#3 unix"``).
    events : frozenset of str or None
        None: not subscribed; empty: every event; else the event names wanted.
    authenticated : bool
        False on a TCP connection until ``engine.auth`` succeeded.
    stop : callable or None
        What ``engine.shutdown`` calls (the server's ``request_stop``); None: refused.
    request_slots : asyncio.Semaphore or None
        Requests of this session that may be in the daemon at once (a batch's members count
        one by one); None: no limit.
    """

    def __init__(self, label: str = "in-process", *, authenticated: bool = True,
                 stop: Callable[[], None] | None = None,
                 request_slots: asyncio.Semaphore | None = None) -> None:
        self.label = label
        self.events: frozenset[str] | None = None
        self.authenticated = authenticated
        self.stop = stop
        self.request_slots = request_slots
        #: Held by a batch while its members take their slots, so a connection's batches are
        #: admitted in the order they came (each finishes before the next, not all at the end).
        self.batch_admission = asyncio.Lock() if request_slots is not None else None

    def wants(self, event: str) -> bool:
        """True when this session subscribed to ``event``."""
        events = self.events
        return events is not None and (not events or event in events)


class _Builtins:
    """The methods every session has (answered by the daemon itself, not the Engine).

    Each takes the session first; they run on the event loop and must not block.
    """

    @staticmethod
    def auth(session: Session, token: str) -> bool:
        """Authenticate (TCP); on a Unix socket any token is accepted."""
        return True

    @staticmethod
    def ping(session: Session) -> dict[str, Any]:
        """Whether the daemon answers, its pid, version and protocol version."""
        return {"pong": True, "pid": os.getpid(), "version": _version(),
                "protocol": PROTOCOL_VERSION}

    @staticmethod
    def subscribe(session: Session, events: list[str] | None = None) -> dict[str, Any]:
        """Receive notifications for ``events`` (all when null)."""
        session.events = frozenset(events or ())
        return {"subscribed": sorted(session.events) or ["*"]}

    @staticmethod
    def unsubscribe(session: Session) -> dict[str, Any]:
        """Stop receiving notifications."""
        was = session.events is not None
        session.events = None
        return {"unsubscribed": was}

    @staticmethod
    def shutdown(session: Session) -> dict[str, Any]:
        """Stop the daemon (a running scan commits what it finished)."""
        if session.stop is None:
            raise DeejaiError("this engine cannot be shut down from here")
        log.info("shutdown requested by connection %s", session.label)
        session.stop()
        return {"stopping": True, "pid": os.getpid()}


def _builtin(name: str, func: Callable[..., Any], result: str, **notes: str) -> Method:
    return method_from_function(name, func, skip=1, result=result, notes=notes)


#: The built-in methods, by wire name (see ``docs/protocol.md``).
BUILTIN_TABLE: dict[str, Method] = {
    m.name: m for m in (
        _builtin("engine.ping", _Builtins.ping, '`{"pong": true, "pid", "version", "protocol"}`'),
        _builtin("engine.auth", _Builtins.auth,
                 "`true` (see [Authentication](#authentication-tcp))"),
        _builtin("engine.subscribe", _Builtins.subscribe,
                 '`{"subscribed": [...]}` (`["*"]` for all)',
                 events="list of names; null: all"),
        _builtin("engine.unsubscribe", _Builtins.unsubscribe, '`{"unsubscribed": bool}`'),
        _builtin("engine.shutdown", _Builtins.shutdown,
                 '`{"stopping": true, "pid"}`; the daemon then stops'),
    )
}
#: Wire names of the built-in methods.
BUILTIN_METHODS = tuple(BUILTIN_TABLE)


def contract() -> list[Method]:
    """Every method of the protocol: the built-in ones, then the Engine's table."""
    from deejai.engine.service import ENGINE_METHODS

    return [*BUILTIN_TABLE.values(), *ENGINE_METHODS.values()]


def plugin_methods(found: Mapping[str, Callable[..., Any]], taken: set[str]) -> dict[str, Method]:
    """Methods from ``callable(engine, **params)`` functions (the ``register_rpc_methods``
    hook), minus names the engine already has (those are logged and ignored)."""
    out: dict[str, Method] = {}
    for name, func in found.items():
        if name in taken:
            log.warning("plugin RPC method %r ignored: the engine already has it", name)
            continue
        out[name] = method_from_function(name, func, skip=1, heavy=True)  # cost unknown
    return out


class FairLane:
    """At most ``capacity`` calls at once; calls that wait are served round-robin by key.

    The key is the connection (its :class:`Session`): each key has its own FIFO queue, and a
    freed slot goes to the first waiter of the key whose turn it is, that key then going to the
    back of the ring. It lives on the event loop (not thread-safe).

    Parameters
    ----------
    capacity : int
        Calls that may run at once (the threads of the pool behind the lane).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a lane needs at least one slot")
        self.capacity = int(capacity)
        self.running = 0
        self._queues: collections.OrderedDict[Hashable, collections.deque[asyncio.Future]] = \
            collections.OrderedDict()

    @property
    def waiting(self) -> int:
        """Calls queued for a slot."""
        return sum(1 for q in self._queues.values() for f in q if not f.done())

    async def acquire(self, key: Hashable) -> None:
        """Wait for a slot (in ``key``'s turn); pair with :meth:`release`."""
        if self.running < self.capacity and not self._queues:
            self.running += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, collections.deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # the slot was handed over: give it back
                self.release()
            else:
                queue_ = self._queues.get(key)
                if queue_ is not None:
                    try:
                        queue_.remove(fut)
                    except ValueError:  # pragma: no cover - already taken out
                        pass
                    if not queue_:
                        del self._queues[key]
            raise

    def release(self) -> None:
        """Give the slot to the next waiter in turn, or free it."""
        while self._queues:
            key, queue_ = next(iter(self._queues.items()))
            fut = queue_.popleft()
            if queue_:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            if not fut.done():
                fut.set_result(None)  # the slot passes on: ``running`` is unchanged
                return
        self.running -= 1


class _Fault(Exception):
    """A protocol-level error (invalid request, unknown method, bad params)."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Dispatcher:
    """Answer JSON-RPC lines with an Engine's methods.

    Parameters
    ----------
    engine : object
        The facade whose methods the table names (an :class:`~deejai.engine.service.Engine`).
    methods : dict, optional
        Wire name -> :class:`~deejai.engine.methods.Method`; default: the method table of
        ``type(engine)``. Built-in names are never taken from it.
    extra : dict, optional
        More methods, ``callable(engine, **params)`` by wire name (the plugins' RPC methods,
        handed over at start-up); names the engine or the built-ins have are ignored.
    executor : Executor, optional
        Where cheap Engine calls run (default: a pool of ``threads`` threads).
    heavy_executor : Executor, optional
        Where heavy calls run (default: a pool of ``heavy_threads`` threads).
    threads : int, optional
        Threads of the cheap calls' pool, when the dispatcher makes it (default
        :data:`LIGHT_THREADS`).
    heavy_threads : int, optional
        Heavy calls that run at once (default :func:`default_heavy_threads`); give the number
        of threads of ``heavy_executor`` when you pass one.

    Pools the dispatcher made are shut down by :meth:`close`.
    """

    def __init__(self, engine: Any, *, methods: Mapping[str, Method] | None = None,
                 extra: Mapping[str, Callable[..., Any]] | None = None,
                 executor: concurrent.futures.Executor | None = None,
                 heavy_executor: concurrent.futures.Executor | None = None,
                 threads: int | None = None, heavy_threads: int | None = None) -> None:
        self.engine = engine
        table = dict(methods) if methods is not None else method_table(type(engine))
        self.methods = {k: v for k, v in table.items() if k not in BUILTIN_TABLE}
        self.plugin_methods = plugin_methods(extra or {}, set(self.methods) | set(BUILTIN_TABLE))
        heavy_threads = int(heavy_threads or default_heavy_threads())
        self._own = [e is None for e in (executor, heavy_executor)]
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=threads or LIGHT_THREADS, thread_name_prefix="deejai-rpc")
        self.heavy_executor = heavy_executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=heavy_threads, thread_name_prefix="deejai-rpc-heavy")
        #: The heavy calls' lane (see the module docstring).
        self.heavy_lane = FairLane(heavy_threads)

    @property
    def methods_list(self) -> list[str]:
        """Every wire name this dispatcher answers, sorted."""
        return sorted([*self.methods, *self.plugin_methods, *BUILTIN_TABLE])

    async def handle_line(self, line: bytes | str, session: Session) -> str | None:
        """Answer one line: a request, a notification or a batch; None when nothing to send."""
        try:
            msg = loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            return error_line(None, PARSE_ERROR, f"parse error: {reason}")
        if isinstance(msg, list):
            if not msg:
                return error_line(None, INVALID_REQUEST, "invalid request: empty batch")
            if len(msg) > MAX_BATCH:
                return error_line(None, INVALID_REQUEST,
                                  f"invalid request: batch of {len(msg)}; at most {MAX_BATCH}")
            replies = await self._handle_batch(msg, session)
            parts = [r for r in replies if r is not None]
            return "[" + ",".join(parts) + "]" if parts else None
        slots = session.request_slots
        if slots is None:
            return await self._handle_request(msg, session)
        async with slots:
            return await self._handle_request(msg, session)

    async def _handle_batch(self, msgs: list, session: Session) -> list[str | None]:
        """Run a batch's members concurrently, each taking one of the session's request
        slots as it starts (so no more are in flight than a connection may have); batches of
        one session are admitted one after the other."""
        slots = session.request_slots

        async def one(m: Any) -> str | None:
            try:
                return await self._handle_request(m, session)
            finally:
                if slots is not None:
                    slots.release()

        tasks: list[asyncio.Task] = []
        try:
            if slots is None or session.batch_admission is None:
                tasks = [asyncio.create_task(one(m)) for m in msgs]
            else:
                async with session.batch_admission:
                    for m in msgs:
                        await slots.acquire()
                        tasks.append(asyncio.create_task(one(m)))
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise

    async def _handle_request(self, msg: Any, session: Session) -> str | None:
        if not isinstance(msg, dict):
            return error_line(None, INVALID_REQUEST, "invalid request: not a JSON object")
        rid = msg.get("id", _MISSING)
        # (numbers out of a double's range never get here: loads() refuses them)
        id_ok = rid is _MISSING or rid is None or isinstance(rid, str) or (
            isinstance(rid, (int, float)) and not isinstance(rid, bool))
        reply_id = rid if id_ok and rid is not _MISSING else None
        if msg.get("jsonrpc") != "2.0":
            return error_line(reply_id, INVALID_REQUEST,
                              'invalid request: "jsonrpc" must be "2.0"')
        if not id_ok:
            return error_line(None, INVALID_REQUEST,
                              "invalid request: id must be a string, a number or null")
        method = msg.get("method")
        if not isinstance(method, str):
            return error_line(reply_id, INVALID_REQUEST,
                              'invalid request: "method" must be a string')
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, (dict, list)):
            return error_line(reply_id, INVALID_REQUEST,
                              'invalid request: "params" must be an object or an array')
        t0 = time.perf_counter()
        try:
            result = await self._invoke(method, params, session)
        except _Fault as exc:
            line = error_line(reply_id, exc.code, exc.message, exc.data)
        except DeejaiError as exc:
            try:
                data = exc.data()
            except Exception:  # pragma: no cover - a broken data() must not kill the reply
                data = None
            line = error_line(reply_id, exc.code, str(exc), data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error in %s", method)
            line = error_line(reply_id, INTERNAL_ERROR,
                              f"internal error: {type(exc).__name__}: {exc}")
        else:
            line = result_line(reply_id, result)
        log.debug("%s %s %.1f ms", session.label, method, 1000 * (time.perf_counter() - t0))
        return None if rid is _MISSING else line

    def _bind(self, spec: Method, params: dict | list) -> dict[str, Any]:
        try:
            return spec.bind(params)
        except InvalidParams as exc:
            raise _Fault(INVALID_PARAMS, str(exc),
                         {"param": exc.param} if exc.param else None) from None

    async def _invoke(self, method: str, params: dict | list, session: Session) -> str:
        """Run ``method``; returns the result as JSON text."""
        spec = BUILTIN_TABLE.get(method)
        if spec is not None:
            kwargs = self._bind(spec, params)
            return dumps(spec.func(session, **kwargs))
        spec = self.methods.get(method)
        if spec is not None:
            func = getattr(self.engine, spec.attr)
        else:
            spec = self.plugin_methods.get(method)
            if spec is None:
                raise _Fault(METHOD_NOT_FOUND, f"method not found: {method!r}",
                             {"method": method})
            func = functools.partial(spec.func, self.engine)
        kwargs = self._bind(spec, params)
        loop = asyncio.get_running_loop()
        call = functools.partial(_call_and_dump, func, kwargs)
        if not spec.heavy:
            return await loop.run_in_executor(self.executor, call)
        lane = self.heavy_lane
        await lane.acquire(session)
        try:
            return await loop.run_in_executor(self.heavy_executor, call)
        finally:
            lane.release()

    def close(self) -> None:
        """Wait for running Engine calls (in the pools the dispatcher made)."""
        for own, pool in zip(self._own, (self.executor, self.heavy_executor)):
            if own:
                pool.shutdown(wait=True, cancel_futures=True)


def _call_and_dump(func: Callable[..., Any], kwargs: dict[str, Any]) -> str:
    """Run an Engine call and serialise its result, both in the worker thread."""
    return dumps(func(**kwargs))


class InProcessTransport:
    """A client transport that hands lines to a :class:`Dispatcher` in this process.

    What :class:`deejai.engine.rpc.Client` needs of a transport (``send``, ``lines``,
    ``close``), with no socket: the dispatcher runs on a private event loop thread, and events
    the engine emits reach this session when it subscribed. Tests use it to drive the whole
    protocol (parsing, validation, errors, notifications) without a daemon, as httpx's
    ``MockTransport`` does for HTTP.

    Parameters
    ----------
    dispatcher : Dispatcher
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.session = Session("in-process", stop=self.close)
        self.address = "in-process"
        self._incoming: queue.Queue[bytes | None] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="deejai-rpc-inprocess", daemon=True)
        self._thread.start()
        self._closed = False
        subscribe = getattr(dispatcher.engine, "subscribe", None)
        self._unsubscribe = subscribe(self._on_event) if callable(subscribe) else None

    def _on_event(self, event: str, params: dict[str, Any]) -> None:
        if self.session.wants(event):
            self._incoming.put(encode_line(notification_line(event, params))[:-1])

    def send(self, data: bytes) -> None:
        """Hand every line of ``data`` to the dispatcher (replies arrive on :meth:`lines`)."""
        if self._closed:
            raise OSError("the in-process transport is closed")
        for line in data.split(b"\n"):
            if line.strip():
                fut = asyncio.run_coroutine_threadsafe(
                    self.dispatcher.handle_line(line, self.session), self._loop)
                fut.add_done_callback(self._reply)

    def _reply(self, fut: concurrent.futures.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        reply = fut.result()
        if reply is not None:
            self._incoming.put(encode_line(reply)[:-1])

    def lines(self) -> Iterator[bytes]:
        """Replies and notifications, one line each, until :meth:`close`."""
        while True:
            item = self._incoming.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        """End :meth:`lines` and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._incoming.put(None)
        self._loop.call_soon_threadsafe(self._loop.stop)
