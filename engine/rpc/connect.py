"""One way for every front end to reach an engine: :func:`connect`.

The policy the command line, the Kivy app and the tray share: use the daemon when it
answers; else, as the caller asks, start one (and wait until it answers), run an Engine in
this process, or raise :class:`~deejai.engine.errors.DaemonNotRunning`. A daemon that refuses
the token raises :class:`~deejai.engine.errors.AuthenticationFailed` whatever was asked: a
front end must not silently open the library beside a daemon that owns it.

The errors carry what to do next (their ``hint``), so a front end shows ``str(error)`` and
never has to read the message to decide: ``isinstance(error, ConnectionLost)`` says the
daemon went away mid-call (connect again), ``DaemonNotRunning`` that none answers.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

from deejai.engine.errors import DaemonNotRunning

__all__ = ["connect", "is_remote", "daemon_command", "spawn_daemon", "DAEMON_START_TIMEOUT_S"]

log = logging.getLogger("deejai.engine.rpc")

#: How long to wait for a daemon that was just started to answer (seconds). The daemon
#: imports the engine and opens the library before it listens, a few seconds on a slow disk.
DAEMON_START_TIMEOUT_S = 30.0


def daemon_command(socket: str | os.PathLike | None = None) -> list[str]:
    """The command line that starts the daemon with this Python (``deejai serve``)."""
    cmd = [sys.executable, "-m", "deejai.ui_cli.main", "serve"]
    if socket:
        cmd += ["--socket", os.fspath(socket)]
    return cmd


def spawn_daemon(socket: str | os.PathLike | None = None, *,
                 log_file: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start ``deejai serve`` as a process of its own session (it outlives a crash of the
    front end); its output is appended to ``log_file`` (default
    ``<state dir>/daemon-started-by-app.log``)."""
    if log_file is None:
        from deejai.engine.config import paths

        log_file = paths().ensure().state_dir / "daemon-started-by-app.log"
    cmd = daemon_command(socket)
    from deejai.engine._fs import private_file

    private_file(log_file)  # 0600: the daemon's output names the user's files
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    log.info("started the daemon (pid %d): %s", proc.pid, " ".join(cmd))
    return proc


def _wait_for_daemon(proc: subprocess.Popen, address: str | None, timeout_s: float,
                     log_file: Path | None) -> Any:
    from deejai.engine.rpc.client import Client

    deadline = time.monotonic() + timeout_s
    where = f"; see {log_file}" if log_file else ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonNotRunning(
                f"the daemon exited at start (status {proc.returncode}){where}",
                hint="fix what its log says, or run `deejai serve` in a terminal")
        client = Client.connect_or_none(address, timeout=1.0)
        if client is not None:
            client.daemon_process = proc
            return client
        time.sleep(0.2)
    raise DaemonNotRunning(f"the daemon did not answer within {timeout_s:g} s{where}",
                           hint="run `deejai serve` in a terminal to see why")


def connect(
    address: str | os.PathLike | None = None,
    *,
    start: bool = False,
    fallback: Literal["error", "in-process"] = "error",
    engine_factory: Callable[[], Any] | None = None,
    timeout: float = 2.0,
    token: str | None = None,
    start_timeout_s: float = DAEMON_START_TIMEOUT_S,
    log_file: str | os.PathLike | None = None,
) -> Any:
    """The engine a front end talks to: the daemon when it answers, else what it asks.

    Parameters
    ----------
    address : str or path, optional
        The daemon's socket path or ``tcp://127.0.0.1:PORT``; default: where clients look
        (``DEEJAI_SOCKET``, the default socket, the lock file's record).
    start : bool
        When no daemon answers, start one (``deejai serve``, in its own session) and wait up
        to ``start_timeout_s`` seconds for it. The process is the client's
        ``daemon_process`` attribute (None when the daemon was already running).
    fallback : {"error", "in-process"}
        When no daemon answers (and none was started): raise, or return an Engine in this
        process from ``engine_factory``.
    engine_factory : callable, optional
        Builds the in-process Engine (the composition root hands over the plugins'
        exporters and sinks); default :class:`deejai.engine.service.Engine`.
    timeout : float
        Seconds to wait for a running daemon to accept and answer ``engine.ping``.
    token : str, optional
        TCP token (default ``DEEJAI_TOKEN``, else the token file).
    log_file : path, optional
        Where a started daemon's output goes.

    Returns
    -------
    Client or Engine
        Either has the Engine's methods, parameters, results and errors.

    Raises
    ------
    DaemonNotRunning
        No daemon answers, ``fallback="error"``, and none was started (or the started one
        exited or did not answer in time; the message says where its log is).
    AuthenticationFailed
        A TCP daemon refused the token.
    """
    from deejai.engine.rpc.client import Client

    if fallback not in ("error", "in-process"):
        raise ValueError(f"fallback must be 'error' or 'in-process', not {fallback!r}")
    target = os.fspath(address) if address is not None else None
    try:
        return Client.connect(target, timeout=timeout, token=token)
    except DaemonNotRunning:
        if not start and fallback == "error":
            raise
    if start:
        if log_file is None:
            from deejai.engine.config import paths

            log_file = paths().ensure().state_dir / "daemon-started-by-app.log"
        proc = spawn_daemon(target, log_file=log_file)
        return _wait_for_daemon(proc, target, start_timeout_s, Path(log_file))
    if engine_factory is None:
        from deejai.engine.service import Engine

        engine_factory = Engine
    return engine_factory()


def is_remote(engine: Any) -> bool:
    """True when ``engine`` is a client of a daemon (not an Engine in this process)."""
    from deejai.engine.rpc.client import Client

    return isinstance(engine, Client)

