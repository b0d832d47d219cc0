"""WorkerPool with real spawned processes: crashes fail only their own task."""
from __future__ import annotations

import concurrent.futures as cf
import os
import time

import psutil
import pytest

from deejai.engine.errors import DeejaiError, WorkerDiedError
from deejai.engine.pool import PoolBrokenError, WorkerPool, worker_state

# Task functions live at module level: spawned workers import them by name.


def square(x: int) -> int:
    return x * x


def whoami(_: int = 0) -> tuple[int, int]:
    """(pid, how many times this worker's initializer ran)."""
    return os.getpid(), worker_state().get("inits", 0)


def init_counter(tag: str) -> None:
    state = worker_state()
    state["inits"] = state.get("inits", 0) + 1
    state["tag"] = tag


def get_tag() -> str:
    return worker_state()["tag"]


def exit_hard(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def kill_self() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def raise_value(msg: str) -> None:
    raise ValueError(msg)


def raise_unpicklable() -> None:
    class Local(Exception):
        pass

    raise Local("local class cannot be pickled")


def return_unpicklable():
    return lambda: None


def slow(x: float) -> float:
    time.sleep(x)
    return x


def init_fails() -> None:
    raise RuntimeError("no model here")


@pytest.fixture
def pool():
    p = WorkerPool(2, initializer=init_counter, initargs=("hello",))
    yield p
    p.shutdown(wait=True, cancel_futures=True)


def test_results_and_map(pool):
    futures = [pool.submit(square, i) for i in range(10)]
    assert sorted(f.result(timeout=60) for f in cf.as_completed(futures)) == [i * i for i in range(10)]
    assert list(pool.map(square, range(5), timeout=60)) == [0, 1, 4, 9, 16]
    assert pool.submit(get_tag).result(timeout=60) == "hello"


def test_initializer_runs_once_per_worker(pool):
    results = [pool.submit(whoami).result(timeout=60) for _ in range(12)]
    assert {inits for _, inits in results} == {1}
    assert len({pid for pid, _ in results}) <= 2
    assert os.getpid() not in {pid for pid, _ in results}


@pytest.mark.parametrize("crash", [exit_hard, segfault, kill_self], ids=["os._exit", "segfault", "sigkill"])
def test_dead_worker_fails_only_its_task(pool, crash):
    before = [pool.submit(square, i) for i in range(4)]
    args = (3,) if crash is exit_hard else ()
    bad = pool.submit(crash, *args)
    after = [pool.submit(square, i) for i in range(4, 10)]
    with pytest.raises(WorkerDiedError) as info:
        bad.result(timeout=60)
    assert isinstance(info.value, DeejaiError)
    assert "died" in str(info.value)
    if crash is segfault:
        assert "SIGSEGV" in str(info.value)
    assert [f.result(timeout=60) for f in before + after] == [i * i for i in range(10)]
    assert pool.replaced == 1
    # the replacement worker ran the initializer too
    assert pool.submit(get_tag).result(timeout=60) == "hello"
    assert len(pool.worker_pids()) == 2


def test_task_exceptions_are_returned(pool):
    with pytest.raises(ValueError, match="boom"):
        pool.submit(raise_value, "boom").result(timeout=60)
    with pytest.raises(DeejaiError, match="local class cannot be pickled"):
        pool.submit(raise_unpicklable).result(timeout=60)
    with pytest.raises(DeejaiError, match="could not be sent back"):
        pool.submit(return_unpicklable).result(timeout=60)
    assert pool.replaced == 0
    assert pool.submit(square, 7).result(timeout=60) == 49


def test_results_stream_as_they_finish():
    with WorkerPool(2) as pool:
        slow_f = pool.submit(slow, 1.5)
        fast_f = pool.submit(slow, 0.01)
        first = next(cf.as_completed([slow_f, fast_f], timeout=60))
        assert first is fast_f
        assert slow_f.result(timeout=60) == 1.5


def test_broken_initializer_fails_tasks():
    pool = WorkerPool(1, initializer=init_fails)
    fut = pool.submit(square, 2)
    with pytest.raises(PoolBrokenError, match="no model here"):
        fut.result(timeout=60)
    with pytest.raises(PoolBrokenError):
        pool.submit(square, 3)
    pool.shutdown()


def test_shutdown_runs_queue_and_leaves_no_processes():
    pool = WorkerPool(2)
    pids = pool.worker_pids()
    futures = [pool.submit(slow, 0.05) for _ in range(6)]
    pool.shutdown(wait=True)
    assert all(f.result() == 0.05 for f in futures)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    with pytest.raises(RuntimeError):
        pool.submit(square, 1)


def test_cancel_futures_and_terminate():
    pool = WorkerPool(1)
    running = pool.submit(slow, 30)
    queued = [pool.submit(square, i) for i in range(3)]
    deadline = time.monotonic() + 60
    while not running.running() and time.monotonic() < deadline:  # dispatched to the worker
        time.sleep(0.05)
    assert running.running()
    pids = pool.worker_pids()
    t0 = time.monotonic()
    pool.terminate()
    assert time.monotonic() - t0 < 20
    assert all(f.cancelled() for f in queued)
    with pytest.raises(WorkerDiedError):
        running.result(timeout=5)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def die_at_start() -> None:
    os._exit(3)


def test_workers_that_cannot_start_break_the_pool_instead_of_respawning():
    pool = WorkerPool(1, initializer=die_at_start)
    fut = pool.submit(square, 2)
    with pytest.raises(PoolBrokenError, match="cannot start"):
        fut.result(timeout=60)
    assert pool.replaced < 5
    pool.shutdown()


def test_task_timeout_kills_only_the_stuck_task():
    pool = WorkerPool(2, task_timeout_s=2.0)
    stuck = pool.submit(slow, 120)
    fine = [pool.submit(slow, 0.1) for _ in range(4)]
    with pytest.raises(WorkerDiedError, match="longer than 2 s"):
        stuck.result(timeout=60)
    assert [f.result(timeout=60) for f in fine] == [0.1] * 4
    assert pool.submit(square, 5).result(timeout=60) == 25
    assert pool.replaced == 1
    pool.shutdown()


def test_timeout_is_a_task_timeout_error():
    from deejai.engine.errors import TaskTimeoutError

    pool = WorkerPool(1, task_timeout_s=1.0)
    with pytest.raises(TaskTimeoutError):
        pool.submit(slow, 120).result(timeout=60)
    pool.shutdown()


def test_submit_fresh_runs_each_task_in_a_process_of_its_own(pool):
    regular = set(pool.worker_pids())
    # fresh tasks: each in a new process (the initializer ran there, once), one at a time
    fresh = [pool.submit_fresh(whoami) for _ in range(3)]
    normal = [pool.submit(whoami) for _ in range(6)]
    got = [f.result(timeout=60) for f in fresh]
    assert all(inits == 1 for _, inits in got)
    fresh_pids = {pid for pid, _ in got}
    assert len(fresh_pids) == 3 and not fresh_pids & regular
    assert {pid for pid, _ in (f.result(timeout=60) for f in normal)} <= regular
    # they exit after their task; the regular workers stay, nothing counts as replaced
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
              for p in fresh_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in fresh_pids)
    assert set(pool.worker_pids()) == regular and pool.replaced == 0


def test_a_fresh_worker_that_dies_fails_only_its_task(pool):
    bad = pool.submit_fresh(kill_self)
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        bad.result(timeout=60)
    assert pool.submit_fresh(square, 4).result(timeout=60) == 16  # a new one for the next
    assert pool.submit(square, 5).result(timeout=60) == 25
    assert pool.replaced == 0 and len(pool.worker_pids()) == 2


def test_shutdown_cancels_queued_fresh_tasks():
    pool = WorkerPool(1)
    first = pool.submit_fresh(slow, 1.0)
    queued = pool.submit_fresh(square, 3)
    pool.shutdown(wait=True, cancel_futures=True)
    assert queued.cancelled() or queued.result() == 9
    assert first.cancelled() or first.result() == 1.0
    with pytest.raises(RuntimeError):
        pool.submit_fresh(square, 1)
