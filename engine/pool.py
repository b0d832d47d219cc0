"""A process pool whose dead workers fail only their own task.

:class:`WorkerPool` is a :class:`concurrent.futures.Executor` built on ``multiprocessing``
processes started with the *spawn* method (no inherited locks, threads or open databases, and
the same behaviour on Linux, macOS and Windows). Each worker runs ``initializer(*initargs)``
once — the scan uses it to load the TFLite interpreter a single time per worker — and then
runs one task at a time.

Unlike :class:`concurrent.futures.ProcessPoolExecutor`, which marks the whole pool broken when
any worker dies, the pool gives every worker its own pipe and remembers which task each worker
is running. When a worker dies (a segfault in a decoder, ``os._exit``, the kernel's OOM killer)
only that task fails, with :class:`~deejai.engine.errors.WorkerDiedError`, and a fresh worker
takes its place. Results come back as futures, so ``concurrent.futures.as_completed`` streams
them as they finish.

:meth:`WorkerPool.submit_fresh` runs a task in a worker process started for it alone, which
exits afterwards: the scan retries a file whose worker died there, so that a worker's state
(memory it grew, a library left broken by the crash of a neighbour thread) plays no part in
the second try. One such worker runs at a time, beside the ``max_workers`` others.

A manager thread in the parent dispatches tasks and collects results; it waits on every
worker's pipe and process sentinel at once with :func:`multiprocessing.connection.wait`.
Workers ignore ``SIGINT`` so that a Ctrl-C in a terminal reaches only the parent, which then
shuts the pool down (``shutdown(cancel_futures=True)`` or :meth:`WorkerPool.terminate`); a
worker whose parent has gone away sees its pipe close and exits.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from deejai.engine.errors import DeejaiError, TaskTimeoutError, WorkerDiedError

__all__ = ["WorkerPool", "WorkerDiedError", "TaskTimeoutError", "PoolBrokenError",
           "worker_state", "default_workers"]

log = logging.getLogger(__name__)

#: Workers that die in a row before they are ready (start-up crash) before the pool gives up.
MAX_START_FAILURES = 3

#: Per-process state a worker's ``initializer`` fills in (e.g. ``{"model": Model(...)}``).
_WORKER_STATE: dict[str, Any] = {}


def worker_state() -> dict[str, Any]:
    """The module-level dict an ``initializer`` stores per-worker objects in.

    In the parent process it is simply an empty dict, so task functions can fall back to lazy
    initialisation when they run under another executor (threads, Dask, Ray).
    """
    return _WORKER_STATE


def default_workers() -> int:
    """Number of workers used when none is given: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


class PoolBrokenError(DeejaiError):
    """The pool cannot run tasks: its initializer failed or it was shut down."""


class _RemoteError(DeejaiError):
    """Stands in for an exception raised in a worker that could not be pickled."""


# ----------------------------------------------------------------------------------- worker side


def _worker_main(conn: Connection, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Body of a worker process: initialise once, then run tasks until told to stop."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover
        pass
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
            _send(conn, ("init_error", None, _picklable(exc)))
            return
    _send(conn, ("ready", None, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent has gone away
        if msg is None:
            return
        task_id, fn, args, kwargs = msg
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the task's own failure
            if not _send(conn, ("error", task_id, _picklable(exc))):
                return
            continue
        if not _send(conn, ("ok", task_id, result)):
            return


def _send(conn: Connection, msg: tuple) -> bool:
    """Send ``msg``; an unpicklable result is replaced by an error. False when the pipe is gone."""
    try:
        conn.send(msg)
        return True
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return False
    except Exception as exc:  # pickling failed
        kind, task_id, _ = msg
        try:
            conn.send(("error", task_id, _RemoteError(f"result could not be sent back: {exc}")))
            return True
        except Exception:  # pragma: no cover
            return False


def _picklable(exc: BaseException) -> BaseException:
    """Return ``exc`` when it pickles, else a :class:`_RemoteError` carrying its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _RemoteError(text)


# ----------------------------------------------------------------------------------- parent side


@dataclass
class _Task:
    id: int
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    future: Future


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    ready: bool = False
    task: _Task | None = None
    pid: int | None = None
    tasks_done: int = 0
    started_at: float = 0.0
    timed_out: bool = False
    #: Started for one :meth:`WorkerPool.submit_fresh` task; told to exit after it.
    dedicated: bool = False
    #: Told to exit (a dedicated worker after its task): its exit is not a death.
    retiring: bool = False
    extra: dict = field(default_factory=dict)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class WorkerPool(Executor):
    """A spawn-based process pool where a dead worker fails only the task it was running.

    Parameters
    ----------
    max_workers : int, optional
        Number of worker processes; default :func:`default_workers` (the usable CPU cores).
    initializer : callable, optional
        Run once in every worker before its first task (and in every replacement worker). It
        must be importable by name (a module-level function), as the workers are spawned.
    initargs : tuple
        Arguments of ``initializer``.
    mp_context : multiprocessing context, optional
        Default ``multiprocessing.get_context("spawn")``.
    task_timeout_s : float, optional
        A task still running after this many seconds has its worker killed (a decoder stuck
        in a loop); it fails with :class:`~deejai.engine.errors.WorkerDiedError` and the
        worker is replaced. None: no limit.

    Notes
    -----
    Tasks, their arguments and results are pickled. A task whose worker dies fails with
    :class:`~deejai.engine.errors.WorkerDiedError`; the other tasks, queued or running, are not
    affected. When the initializer raises, the pool is broken: queued tasks fail with
    :class:`PoolBrokenError` naming the initializer's error, and ``submit`` raises it.

    Examples
    --------
    >>> with WorkerPool(2) as pool:                     # doctest: +SKIP
    ...     futures = [pool.submit(pow, 2, i) for i in range(5)]
    ...     [f.result() for f in futures]
    [1, 2, 4, 8, 16]
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        mp_context: Any = None,
        task_timeout_s: float | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = default_workers()
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = int(max_workers)
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._task_timeout_s = task_timeout_s
        self._ctx = mp_context or multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()
        self._fresh: deque[_Task] = deque()  # tasks for a worker of their own
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._shutdown = False
        self._broken: BaseException | None = None
        self._terminated = False
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        #: Number of workers that died and were replaced (for tests and logs).
        self.replaced = 0
        self._start_failures = 0
        for _ in range(self._max_workers):
            self._workers.append(self._start_worker())
        self._thread = threading.Thread(target=self._manage, name="deejai-pool", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ Executor interface

    @property
    def max_workers(self) -> int:
        """Number of worker processes."""
        return self._max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` in a worker and return its :class:`Future`.

        Raises
        ------
        RuntimeError
            After :meth:`shutdown`.
        PoolBrokenError
            When the initializer failed in a worker.
        """
        with self._lock:
            if self._broken is not None:
                raise PoolBrokenError(str(self._broken))
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut: Future = Future()
            self._pending.append(_Task(next(self._ids), fn, args, kwargs, fut))
        self._wake()
        return fut

    def submit_fresh(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Like :meth:`submit`, but run the task in a worker process started for it alone.

        The worker runs the initializer, then this one task, then exits; it is started beside
        the ``max_workers`` others (one at a time: further fresh tasks wait for it to finish).
        The scan retries a file whose worker died this way.

        Raises
        ------
        RuntimeError
            After :meth:`shutdown`.
        PoolBrokenError
            When the initializer failed in a worker.
        """
        with self._lock:
            if self._broken is not None:
                raise PoolBrokenError(str(self._broken))
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut: Future = Future()
            self._fresh.append(_Task(next(self._ids), fn, args, kwargs, fut))
        self._wake()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; workers exit once the queued tasks are done.

        Parameters
        ----------
        wait : bool
            Block until every worker has exited.
        cancel_futures : bool
            Cancel the queued tasks that have not started instead of running them.
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for queue in (self._pending, self._fresh):
                    while queue:
                        queue.popleft().future.cancel()
        self._wake()
        if wait:
            self._thread.join()

    def terminate(self) -> None:
        """Kill the workers now (Ctrl-C): queued tasks are cancelled, running ones fail."""
        with self._lock:
            self._shutdown = True
            self._terminated = True
            for queue in (self._pending, self._fresh):
                while queue:
                    queue.popleft().future.cancel()
        self._wake()
        self._thread.join()

    def worker_pids(self) -> list[int]:
        """Process ids of the live regular workers (for tests and diagnostics); a worker
        started for a :meth:`submit_fresh` task is not one of them."""
        with self._lock:
            return [w.process.pid for w in self._workers
                    if w.process.pid is not None and not w.dedicated]

    # ------------------------------------------------------------------ internals

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except (OSError, ValueError):  # pragma: no cover - closed during shutdown
            pass

    def _start_worker(self, *, dedicated: bool = False) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._initializer, self._initargs),
            name="deejai-worker",
            daemon=True,
        )
        proc.start()
        child_conn.close()  # the parent keeps only its end, so EOF means the worker is gone
        return _Worker(process=proc, conn=parent_conn, dedicated=dedicated)

    def _dispatch(self) -> None:
        """Give queued tasks to idle, ready workers; start the worker of a fresh task."""
        with self._lock:
            want_fresh = bool(self._fresh) and not self._terminated and self._broken is None
        if want_fresh and not any(w.dedicated for w in self._workers):
            self._workers.append(self._start_worker(dedicated=True))
        for w in self._workers:
            if not w.ready or w.task is not None or w.retiring:
                continue
            if w.dedicated and w.tasks_done:
                continue  # it ran its task and is on its way out
            queue = self._fresh if w.dedicated else self._pending
            while True:
                with self._lock:
                    task = queue.popleft() if queue else None
                if task is None:
                    break  # this worker's queue is empty; the next worker may have another
                if not task.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                try:
                    w.conn.send((task.id, task.fn, task.args, task.kwargs))
                except (BrokenPipeError, OSError):
                    # the worker died just now; its sentinel will fire and fail the task
                    w.task = task
                    break
                except Exception as exc:  # the task itself could not be pickled
                    task.future.set_exception(exc)
                    continue
                w.task = task
                w.started_at = time.monotonic()
                break

    def _handle_message(self, w: _Worker) -> None:
        try:
            kind, task_id, payload = w.conn.recv()
        except (EOFError, OSError):
            self._reap(w)
            return
        if kind == "ready":
            w.ready = True
            w.pid = payload
            self._start_failures = 0
        elif kind == "init_error":
            with self._lock:
                self._broken = payload
        elif kind in ("ok", "error"):
            task, w.task = w.task, None
            w.tasks_done += 1
            if task is None or task.id != task_id:  # pragma: no cover - protocol error
                log.error("worker %s answered an unknown task %s", w.pid, task_id)
                return
            if w.dedicated:
                self._retire(w)  # one task each: a later fresh task gets a new process
            if kind == "ok":
                task.future.set_result(payload)
            else:
                task.future.set_exception(payload)

    def _retire(self, w: _Worker) -> None:
        """Ask worker ``w`` to exit once idle; its exit is then not reported as a death."""
        w.retiring = True
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass

    def _reap(self, w: _Worker) -> None:
        """A worker exited: fail its task and start a replacement (unless shutting down)."""
        if w not in self._workers:
            return
        w.process.join(timeout=5)
        exitcode = w.process.exitcode
        try:
            w.conn.close()
        except OSError:  # pragma: no cover
            pass
        self._workers.remove(w)
        if w.retiring and w.task is None:
            return  # a dedicated worker that ran its task: no replacement, no warning
        if not w.ready:
            # the process died before it could run anything: its start-up is broken (an
            # unimportable __main__, a crashing initializer); a few tries, then give up
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                with self._lock:
                    if self._broken is None:
                        self._broken = WorkerDiedError(
                            f"worker processes cannot start ({_describe_exit(exitcode)}, "
                            f"{self._start_failures} times)"
                        )
        task, w.task = w.task, None
        if task is not None and not task.future.done():
            if w.timed_out:
                task.future.set_exception(TaskTimeoutError(
                    f"the task ran longer than {self._task_timeout_s:g} s and was stopped"))
            else:
                task.future.set_exception(WorkerDiedError(
                    f"worker process {w.process.pid} died while running a task "
                    f"({_describe_exit(exitcode)})"))
        if w.dedicated:
            # the next fresh task (if any) gets a new process from _dispatch
            log.warning("worker %s died (%s)", w.process.pid, _describe_exit(exitcode))
            return
        with self._lock:
            # after shutdown(), a replacement is still needed while queued tasks wait to run
            stop = self._terminated or self._broken is not None or (
                self._shutdown and not self._pending
            )
        if not stop:
            self.replaced += 1
            log.warning("worker %s died (%s); starting a new one", w.process.pid, _describe_exit(exitcode))
            self._workers.append(self._start_worker())

    def _fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            tasks = list(self._pending) + list(self._fresh)
            self._pending.clear()
            self._fresh.clear()
        for task in tasks:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(exc)

    def _manage(self) -> None:
        """Manager thread: dispatch, collect results, replace dead workers, shut down."""
        try:
            while True:
                with self._lock:
                    broken = self._broken
                    shutdown = self._shutdown
                    terminated = self._terminated
                    idle_queue = not self._pending and not self._fresh
                if terminated:
                    break
                if broken is not None:
                    self._fail_pending(PoolBrokenError(f"worker initialisation failed: {broken}"))
                    if all(w.task is None for w in self._workers):
                        break
                elif shutdown and idle_queue and all(
                        w.task is None for w in self._workers if not w.retiring):
                    break
                self._dispatch()
                objects: list[Any] = [self._wake_r]
                by_obj: dict[Any, tuple[str, _Worker]] = {}
                for w in self._workers:
                    objects.append(w.conn)
                    by_obj[w.conn] = ("conn", w)
                    objects.append(w.process.sentinel)
                    by_obj[w.process.sentinel] = ("sentinel", w)
                ready = wait(objects, timeout=self._kill_overdue())
                died: list[_Worker] = []
                for obj in ready:
                    if obj is self._wake_r:
                        while self._wake_r.poll():
                            self._wake_r.recv_bytes()
                        continue
                    what, w = by_obj[obj]
                    if what == "conn" and w in self._workers:
                        self._handle_message(w)
                    elif what == "sentinel":
                        died.append(w)
                for w in died:
                    # drain a result the worker sent just before it exited
                    while w in self._workers and w.conn.poll():
                        self._handle_message(w)
                    self._reap(w)
        except BaseException as exc:  # pragma: no cover - a bug here must not hang callers
            log.exception("worker pool manager failed")
            self._fail_pending(PoolBrokenError(f"worker pool manager failed: {exc}"))
        finally:
            self._stop_workers()

    def _kill_overdue(self) -> float | None:
        """Kill workers whose task ran past the timeout; seconds until the next deadline."""
        if self._task_timeout_s is None:
            return None
        now = time.monotonic()
        soonest: float | None = None
        for w in self._workers:
            if w.task is None or w.timed_out:
                continue
            left = w.started_at + self._task_timeout_s - now
            if left <= 0:
                log.warning("task on worker %s timed out; killing it", w.process.pid)
                w.timed_out = True
                w.process.kill()
            else:
                soonest = left if soonest is None else min(soonest, left)
        return soonest

    def _stop_workers(self) -> None:
        with self._lock:
            terminated = self._terminated
        for w in list(self._workers):
            if terminated:
                w.process.terminate()
            else:
                try:
                    w.conn.send(None)
                except (OSError, ValueError):
                    pass
        for w in list(self._workers):
            w.process.join(timeout=10)
            if w.process.is_alive():  # pragma: no cover - a task that never returns
                w.process.kill()
                w.process.join(timeout=5)
            if w.task is not None and not w.task.future.done():
                w.task.future.set_exception(
                    WorkerDiedError(f"worker process {w.process.pid} was stopped by shutdown")
                )
            try:
                w.conn.close()
            except OSError:  # pragma: no cover
                pass
        self._workers.clear()
        self._fail_pending(PoolBrokenError("the worker pool was shut down"))
