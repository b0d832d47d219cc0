"""The engine behind the Kivy app: a daemon client or an in-process Engine, and its threads.

No Kivy here: :class:`Backend` is plain Python, so it is tested on its own and the app only
wraps its callbacks with ``@mainthread``.

* **Daemon** (desktop default): :func:`deejai.engine.connect`, the policy every front end
  shares; when nothing answers and ``start_daemon`` is set, it starts ``deejai serve`` as a
  process (stopped again when the app closes) and waits for it. When the daemon goes away
  mid-use the call fails with :class:`~deejai.engine.errors.ConnectionLost`, the connection is
  dropped, and the next call connects again: the app recovers as soon as a daemon answers.
* **Embedded** (``--embedded``, Android, iOS): one :class:`deejai.engine.service.Engine` in
  this process, built on the first call (on a worker thread, since opening the library and the
  index takes time).

Calls run on a small thread pool (:meth:`Backend.submit`); the engine is thread-safe (one
SQLite connection per thread) and so is the client (one request id per call).
"""
from __future__ import annotations

import logging
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from deejai.engine.errors import ConnectionLost, DaemonError, DeejaiError
from deejai.ui_kivy.viewmodel import contract_home

__all__ = ["Backend", "EventSink", "ConnectionSink"]

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict], None]
ConnectionSink = Callable[[str, str], None]  # (state, message): "connected", "disconnected"


def _release(unsubscribe: Any, engine: Any) -> None:
    """Unsubscribe from ``engine``'s events and close it; a broken connection is not an error."""
    for action in (unsubscribe, getattr(engine, "close", None)):
        if action is None:
            continue
        try:
            action()
        except Exception:  # the connection may already be broken
            log.debug("closing the engine failed", exc_info=True)


class Backend:
    """The engine the app talks to, reached on worker threads.

    Parameters
    ----------
    embedded : bool
        Run an in-process Engine instead of talking to the daemon.
    start_daemon : bool
        When no daemon answers, start one as a child process (desktop only).
    socket : str, optional
        The daemon's socket path (``deejai serve --socket PATH``); default: the client's.
    index_backend : str
        ``"auto"``, ``"faiss"`` or ``"numpy"``, for the embedded Engine.
    scan_executor : str, optional
        ``"thread"`` or ``"process"`` for the embedded Engine's scans (phones: threads);
        None leaves it to the settings.
    on_event : callable, optional
        ``on_event(event, params)`` for engine events (called on a non-UI thread).
    on_connection : callable, optional
        ``on_connection(state, message)`` when the engine becomes reachable or is lost.
    workers : int
        Threads for calls (search-as-you-type should not wait behind a long playlist).
    """

    def __init__(
        self,
        *,
        embedded: bool = False,
        start_daemon: bool = True,
        socket: str | None = None,
        index_backend: str = "auto",
        scan_executor: str | None = None,
        on_event: EventSink | None = None,
        on_connection: ConnectionSink | None = None,
        workers: int = 3,
    ) -> None:
        self.embedded = bool(embedded)
        self.start_daemon = bool(start_daemon)
        self.socket = socket
        self.index_backend = index_backend
        self.scan_executor = scan_executor
        self.on_event = on_event
        self.on_connection = on_connection
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deejai-ui")
        self._lock = threading.RLock()
        self._engine: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._daemon: subprocess.Popen | None = None
        self._spawned_once = False
        self._closed = False
        self.mode = "embedded" if self.embedded else "daemon"

    # ---------------------------------------------------------------- connection
    @property
    def connected(self) -> bool:
        """True while an engine (client or in-process) is held."""
        return self._engine is not None

    @property
    def daemon_process(self) -> subprocess.Popen | None:
        """The daemon this backend started, if any."""
        return self._daemon

    def daemon_command(self) -> list[str]:
        """The command line that starts the daemon (``deejai serve``)."""
        from deejai.engine.rpc import daemon_command

        return daemon_command(self.socket)

    def spawn_daemon(self) -> subprocess.Popen:
        """Start ``deejai serve`` as a process; its output goes to the state folder."""
        from deejai.engine.rpc import spawn_daemon

        self._daemon = spawn_daemon(self.socket)
        self._spawned_once = True
        return self._daemon

    def _open(self) -> Any:
        if self.embedded:
            from deejai.plugins.manager import build_engine

            return build_engine(index_backend=self.index_backend, scan_executor=self.scan_executor)
        from deejai.engine.rpc import connect

        start = self.start_daemon and not self._spawned_once
        client = connect(self.socket or None, start=start)
        if client.daemon_process is not None:
            self._daemon, self._spawned_once = client.daemon_process, True
        return client

    def engine(self) -> Any:
        """The engine, connecting (or starting it) first when needed. Call off the UI thread.

        Raises
        ------
        DaemonNotRunning
            When no daemon answers (and none could be started).
        ConnectionLost
            When the daemon closed the connection since the last call (it is dropped: the
            next call connects again).
        """
        with self._lock:
            if self._closed:
                raise DaemonError("the app is closing")
            held = self._engine
            if held is not None and not getattr(held, "closed", False):
                return held
        if held is not None:  # the daemon closed the connection since the last call
            lost = ConnectionLost(f"the daemon at {getattr(held, 'address', '?')} closed the "
                                  "connection")
            self._drop(held, str(lost))
            raise lost
        with self._lock:
            if self._engine is not None:
                return self._engine
            engine = self._open()
            self._engine = engine
            if self.on_event is not None:
                try:
                    self._unsubscribe = engine.subscribe(self._forward_event)
                except DeejaiError as exc:  # events are a nicety; calls still work
                    log.warning("cannot subscribe to engine events: %s", exc)
                    self._unsubscribe = None
        if self.embedded:
            threads = ", analysis in threads" if self.scan_executor == "thread" else ""
            where = f"in-process engine ({self.index_backend} index{threads})"
        else:
            where = f"daemon at {contract_home(getattr(engine, 'address', '') or '?')}"
        self._notify("connected", where)
        return engine

    def _forward_event(self, event: str, params: dict) -> None:
        if self.on_event is not None:
            self.on_event(event, params)

    def _drop(self, engine: Any, reason: str) -> None:
        with self._lock:
            if self._engine is not engine:
                return
            self._engine = None
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        _release(unsubscribe, engine)
        self._notify("disconnected", reason)

    def _notify(self, state: str, message: str) -> None:
        if self.on_connection is not None:
            try:
                self.on_connection(state, message)
            except Exception:  # pragma: no cover - a UI callback must not break calls
                log.exception("connection callback failed")

    # ---------------------------------------------------------------- calls
    def call(self, method: str, **params: Any) -> Any:
        """Call ``engine.<method>(**params)`` here and now (blocking; not on the UI thread).

        A lost daemon connection (:class:`ConnectionLost`) is dropped, so the next call
        connects again, and re-raised; its message says what to do.
        """
        engine = self.engine()
        try:
            return getattr(engine, method)(**params)
        except ConnectionLost as exc:
            self._drop(engine, str(exc))
            raise

    def submit(self, method: str, **params: Any) -> Future:
        """Run :meth:`call` on a worker thread; returns its Future."""
        return self._executor.submit(self.call, method, **params)

    def run(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run any callable on a worker thread (e.g. a plugin sink)."""
        return self._executor.submit(fn, *args)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the engine or connection and stop a daemon this backend started."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        _release(unsubscribe, engine)
        self._executor.shutdown(wait=False, cancel_futures=True)
        proc, self._daemon = self._daemon, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck daemon
                proc.kill()
                proc.wait(timeout=5)
