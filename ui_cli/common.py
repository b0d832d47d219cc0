"""What the ``deejai`` subcommands share: the engine to talk to, consoles, JSON output."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from deejai.engine.units import format_duration  # noqa: F401  (the CLI's commands use it)

__all__ = ["get_engine", "uses_daemon", "console", "err_console", "echo_json", "format_duration",
           "native_stderr_captured"]


def get_engine(ctx: click.Context, *, prefer_daemon: bool = True) -> Any:
    """The Engine facade for this command: the daemon when it answers, else in process.

    The daemon is used unless ``--no-daemon`` (or ``DEEJAI_NO_DAEMON=1``) is given or
    ``prefer_daemon`` is False. Both objects have the same methods, parameters and results.
    The engine is closed when the command ends.
    """
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "engine" in obj:
        return obj["engine"]
    from deejai.plugins.manager import build_engine

    if prefer_daemon and not obj.get("no_daemon"):
        from deejai.engine.rpc import connect

        engine: Any = connect(fallback="in-process", engine_factory=build_engine)
    else:
        engine = build_engine()
    obj["engine"] = engine
    root.obj = obj
    root.call_on_close(engine.close)
    return engine


def uses_daemon(engine: Any) -> bool:
    """True when ``engine`` is a client of a running daemon."""
    from deejai.engine.rpc import is_remote

    return is_remote(engine)


def console() -> Any:
    """A rich console on stdout."""
    from rich.console import Console

    return Console()


def err_console() -> Any:
    """A rich console on stderr (progress bars, warnings)."""
    from rich.console import Console

    return Console(stderr=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as one JSON document on stdout."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    sys.stdout.flush()


class native_stderr_captured:
    """Collect what C libraries write to file descriptor 2 while the block runs.

    Decoders print notes of their own (libmpg123 inside libsndfile: "Note: Illegal
    Audio-MPEG-Header ... Trying to resync...") before deejai's clean one-line error. The
    block's fd 2 goes to a temporary file; afterwards the text is in :attr:`text`, and
    written to stderr when ``show`` is true (``--debug``). Python's own ``sys.stderr`` is
    flushed around the block.
    """

    def __init__(self, show: bool = False) -> None:
        self.show = show
        self.text = ""

    def __enter__(self) -> "native_stderr_captured":
        import os
        import tempfile

        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        try:
            self._saved = os.dup(2)
        except OSError:  # no fd 2 (a GUI launcher): nothing to capture
            self._saved = None
            return self
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        import os

        sys.stderr.flush()
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        if self.show and self.text:
            sys.stderr.write(self.text)
            sys.stderr.flush()
