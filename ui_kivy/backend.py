"""The engine behind the Kivy app: a daemon client or an in-process Engine, and its threads.

No Kivy here: :class:`Backend` is plain Python, so it is tested on its own and the app only
wraps its callbacks with ``@mainthread``.

* **Daemon** (desktop default): :meth:`deejai.engine.rpc.Client.connect_or_none`; when nothing
  answers and ``start_daemon`` is set, ``python -m deejai.ui_cli.main serve`` is started as a
  child process (stopped again when the app closes) and the client waits for its socket.
  When the daemon goes away mid-use the call fails with
  :class:`~deejai.engine.errors.DaemonError`, the connection is dropped, and the next call
  connects again: the app recovers as soon as a daemon answers.
* **Embedded** (``--embedded``, Android, iOS): one :class:`deejai.engine.service.Engine` in
  this process, built on the first call (on a worker thread, since opening the library and the
  index takes time).

Calls run on a small thread pool (:meth:`Backend.submit`); the engine is thread-safe (one
SQLite connection per thread) and so is the client (one request id per call).
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from deejai.engine.errors import DaemonError, DeejaiError
from deejai.ui_kivy.viewmodel import contract_home

__all__ = ["Backend", "EventSink", "ConnectionSink", "DAEMON_START_TIMEOUT_S"]

log = logging.getLogger(__name__)

#: How long to wait for a daemon the app started to open its socket (seconds). The daemon
#: imports the engine and opens the library before it listens, a few seconds on a slow disk.
DAEMON_START_TIMEOUT_S = 30.0
#: Seconds a daemon has to answer ``engine.ping`` after a call failed, before the app treats
#: the connection as lost.
PING_TIMEOUT_S = 2.0

EventSink = Callable[[str, dict], None]
ConnectionSink = Callable[[str, str], None]  # (state, message): "connected", "disconnected"


def _connection_lost(engine: Any, exc: BaseException) -> bool:
    """True when ``exc`` means the daemon is unreachable, not that it refused the request.

    A raw ``OSError`` can escape while a socket breaks. The client raises a plain
    :class:`DaemonError` both for a lost connection and for a daemon-side internal error, so
    for that class the connection itself is checked: closed by the reader thread, or not
    answering a ping within :data:`PING_TIMEOUT_S`.
    """
    if isinstance(exc, (OSError, EOFError)):
        return True
    if type(exc) is not DaemonError:
        return False
    if getattr(engine, "closed", False):
        return True
    try:
        engine.call("engine.ping", timeout=PING_TIMEOUT_S)
    except Exception:
        return True
    return False



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
        on_event: EventSink | None = None,
        on_connection: ConnectionSink | None = None,
        workers: int = 3,
    ) -> None:
        self.embedded = bool(embedded)
        self.start_daemon = bool(start_daemon)
        self.socket = socket
        self.index_backend = index_backend
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

    def _client_class(self) -> Any:
        from deejai.engine.rpc import Client

        return Client

    def _connect_once(self, timeout: float | None = None) -> Any:
        """A connected client, or None when no daemon answers."""
        Client = self._client_class()
        address = self.socket or None
        if timeout is None:
            return Client.connect_or_none(address)
        return Client.connect_or_none(address, timeout=timeout)

    def daemon_command(self) -> list[str]:
        """The command line that starts the daemon (``deejai serve``)."""
        cmd = [sys.executable, "-m", "deejai.ui_cli.main", "serve"]
        if self.socket:
            cmd += ["--socket", self.socket]
        return cmd

    def spawn_daemon(self) -> subprocess.Popen:
        """Start ``deejai serve`` as a child process; its output goes to the state folder."""
        from deejai.engine.config import paths

        log_dir = paths().ensure().state_dir
        log_path = Path(log_dir) / "daemon-started-by-app.log"
        with open(log_path, "ab") as out:
            self._daemon = subprocess.Popen(
                self.daemon_command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )
        self._spawned_once = True
        log.info("started the daemon (pid %d): %s", self._daemon.pid, " ".join(self.daemon_command()))
        return self._daemon

    def _open(self) -> Any:
        if self.embedded:
            from deejai.plugins.manager import build_engine

            return build_engine(index_backend=self.index_backend)
        client = self._connect_once()
        if client is None and self.start_daemon and not self._spawned_once:
            proc = self.spawn_daemon()
            deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
            while client is None and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise DaemonError(
                        f"the daemon exited at start (status {proc.returncode}); "
                        "see daemon-started-by-app.log in deejai's state folder"
                    )
                time.sleep(0.2)
                client = self._connect_once()
        if client is None:
            raise DaemonError("the deejai daemon is not running: start it with `deejai serve`")
        return client

    def engine(self) -> Any:
        """The engine, connecting (or starting it) first when needed. Call off the UI thread.

        Raises
        ------
        DaemonError
            When no daemon answers (and none could be started).
        """
        with self._lock:
            if self._closed:
                raise DaemonError("the app is closing")
            if self._engine is not None and not getattr(self._engine, "closed", False):
                return self._engine
        if self._engine is not None:  # the daemon closed the connection since the last call
            self._drop(self._engine, "the daemon closed the connection")
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
            where = f"in-process engine ({self.index_backend} index)"
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

        A lost daemon connection is dropped (the next call reconnects) and re-raised as
        :class:`DaemonError` with a message that says what to do.
        """
        engine = self.engine()
        try:
            return getattr(engine, method)(**params)
        except Exception as exc:
            if not self.embedded and _connection_lost(engine, exc):
                self._drop(engine, str(exc))
                raise DaemonError(
                    f"lost the deejai daemon ({exc}); start it again with `deejai serve` "
                    "and retry"
                ) from exc
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
