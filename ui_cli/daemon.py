"""``deejai serve`` and ``deejai stop``: run and stop the daemon.

The daemon never forks: ``deejai serve`` stays in the foreground until SIGTERM, SIGINT (Ctrl-C)
or ``deejai stop``. Run it under systemd (``extra/systemd/deejai.service``), a terminal
multiplexer or ``deejai serve &``. It logs to ``<state dir>/deejai.log`` (rotated at 1 MiB,
three old files kept); ``--foreground`` also logs to stderr.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

import click

__all__ = ["serve", "stop", "configure_logging"]


def configure_logging(log_file: "os.PathLike[str] | str", *, to_stderr: bool, debug: bool) -> None:
    """Send the ``deejai`` loggers to a rotating file (and stderr when ``to_stderr``)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    root = logging.getLogger("deejai")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    from deejai.engine._fs import PrivateRotatingFileHandler

    # mode 0600: the log names the user's tracks and folders
    file_handler = PrivateRotatingFileHandler(
        log_file, maxBytes=1 << 20, backupCount=3, encoding="utf-8"
    )
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    root.propagate = False


@click.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, resolve_path=True),
    help="Unix socket to listen on [default: $XDG_RUNTIME_DIR/deejai/deejai.sock].",
)
@click.option(
    "--tcp",
    metavar="HOST:PORT",
    help="Listen on TCP instead (loopback only, e.g. 127.0.0.1:6601; port 0 picks one). "
    "Clients authenticate with the token in the runtime folder. Give --socket too for both.",
)
@click.option("--foreground", is_flag=True, help="Also log to stderr (the daemon never forks).")
@click.pass_context
def serve(ctx: click.Context, socket_path: str | None, tcp: str | None, foreground: bool) -> None:
    """Run the deejai daemon: other commands and front ends then use it.

    \b
    The daemon serves JSON-RPC 2.0 on a local socket (docs/protocol.md) and stays in the
    foreground until Ctrl-C, SIGTERM or `deejai stop`. Only one daemon runs per library.
    """
    from deejai.engine.config import paths
    from deejai.engine.rpc import serve as run_daemon

    p = paths().ensure()
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    configure_logging(p.log_file, to_stderr=foreground, debug=debug)

    def ready(server) -> None:
        where = ", ".join(server.addresses) or "the socket systemd passed"
        logging.getLogger("deejai.daemon").info("deejai daemon (pid %d) ready on %s",
                                                os.getpid(), where)
        if not foreground:
            click.echo(f"deejai: daemon (pid {os.getpid()}) listening on {where}; "
                       f"log: {p.log_file}", err=True)

    # the composition root: the plugins' exporters, sinks and RPC methods go to the engine
    from deejai.plugins.manager import build_engine, rpc_methods

    run_daemon(socket_path=socket_path, tcp=tcp, paths=p, on_ready=ready,
               engine_factory=lambda p: build_engine(paths=p), extra_methods=rpc_methods())


def _lock_free() -> bool:
    """True once no daemon holds this library's lock (the daemon has finished closing)."""
    from deejai.engine.errors import DaemonError
    from deejai.engine.rpc import DaemonLock, lock_file

    lock = DaemonLock(lock_file())
    try:
        lock.acquire()
    except DaemonError:
        return False
    lock.release()
    return True


@click.command()
@click.option("--timeout", default=60.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the daemon to finish (a scan commits first).")
def stop(timeout: float) -> None:
    """Stop the running daemon (a running scan is cancelled; what it finished is kept)."""
    from deejai.engine.errors import DaemonError
    from deejai.engine.rpc import Client

    client = Client.connect(timeout=5.0)
    try:
        pid = int(client.ping()["pid"])
        client.shutdown()
    finally:
        client.close()
    deadline = time.monotonic() + timeout
    while not _lock_free():
        if time.monotonic() > deadline:
            raise DaemonError(f"the daemon (pid {pid}) is still stopping after {timeout:g} s")
        time.sleep(0.05)
    click.echo(f"deejai: daemon (pid {pid}) stopped", err=True)
