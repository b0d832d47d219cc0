"""The exceptions deejai raises.

Every error deejai raises on purpose derives from :class:`DeejaiError`. A front end shows
``str(error)`` as one line; each class carries the JSON-RPC error ``code`` the daemon sends and
the process ``exit_code`` the CLI uses::

    DeejaiError                      generic failure             exit 1
    ├── ConfigError                  bad settings file or option  exit 1
    ├── InvalidParamsError           a parameter's value is out of range (JSON-RPC -32602)
    ├── ModelError                   model folder missing, card invalid, file mismatch
    │   └── BackendUnavailableError  no TFLite runtime can be imported
    ├── WorkerDiedError              a pool worker died while running a task
    │   └── TaskTimeoutError         ... because it ran too long and was stopped
    ├── ClusterError                 the Dask cluster cannot be reached, or was lost
    │   └── ClusterMismatchError     a Dask worker runs another deejai or model
    ├── AudioError                   a file cannot be decoded (carries ``path``)
    │   ├── UnsupportedFormatError   no decoder reads this file
    │   └── EmptyAudioError          the file decodes to no samples
    ├── LibraryError                 the SQLite library cannot be used
    │   ├── LibraryEmptyError        nothing scanned yet (hint: run ``deejai scan``)
    │   ├── ScanRunningError         a scan already holds the library lock
    │   └── LibraryDamagedError      the database file is damaged or was emptied
    ├── TrackNotFoundError           no track matches a path, id or query     exit 2
    ├── AmbiguousTrackError          several tracks match (carries ``candidates``)  exit 2
    ├── PlaylistError                a playlist cannot satisfy its constraints
    │   └── UnknownTagError          a ``tag:`` waypoint names no tag of the model   exit 2
    ├── DaemonError                  the daemon cannot be reached or refused a call
    │   ├── DaemonNotRunning         nothing answers at the daemon's address (client side)
    │   ├── ConnectionLost           the daemon went away during a call (client side)
    │   └── AuthenticationFailed     a TCP connection without the right token
    │                                (``UnauthorisedError`` is its old name)
    ├── PluginError                  a plugin failed to load or misbehaved
    ├── SinkError                    a playlist sink (MPD) cannot be reached or refused it
    └── TrayUnavailableError         no system tray here (no display, backend or tray host)

The exit codes follow one rule: 2 when something the person named (a track, a tag) matches
nothing or several things, as click does for a bad option; 1 when a command could not do its
work; 130 after Ctrl-C.

Application error codes for JSON-RPC live in the range -32000..-32099 reserved by the JSON-RPC
2.0 specification for implementation-defined server errors; ``docs/protocol.md`` lists them.
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "DeejaiError",
    "ConfigError",
    "InvalidParamsError",
    "ModelError",
    "BackendUnavailableError",
    "WorkerDiedError",
    "TaskTimeoutError",
    "ClusterError",
    "ClusterMismatchError",
    "AudioError",
    "UnsupportedFormatError",
    "EmptyAudioError",
    "LibraryError",
    "LibraryEmptyError",
    "ScanRunningError",
    "LibraryDamagedError",
    "TrackNotFoundError",
    "AmbiguousTrackError",
    "PlaylistError",
    "UnknownTagError",
    "DaemonError",
    "UnauthorisedError",
    "DaemonNotRunning",
    "ConnectionLost",
    "AuthenticationFailed",
    "PluginError",
    "SinkError",
    "TrayUnavailableError",
    "error_from_code",
]


class DeejaiError(Exception):
    """Base class of every error deejai raises on purpose.

    Attributes
    ----------
    code : int
        JSON-RPC 2.0 error code the daemon replies with.
    exit_code : int
        Exit status of the ``deejai`` command for this error.
    """

    code: int = -32000
    exit_code: int = 1

    def data(self) -> dict[str, Any] | None:
        """Extra JSON-serialisable fields for the JSON-RPC ``error.data`` member."""
        return None


class ConfigError(DeejaiError):
    code = -32001


class InvalidParamsError(DeejaiError):
    """A parameter's value is not one the method takes (out of range, too long).

    The daemon answers it with JSON-RPC's own "invalid params" code, as when a value has the
    wrong type (``data.param`` names the parameter); the Engine raises it in process too.

    Parameters
    ----------
    message : str
        One line that names the parameter and says what is accepted.
    param : str, optional
        The parameter's name.
    """

    code = -32602
    param: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.param))

    def data(self) -> dict[str, Any] | None:
        return {"param": self.param} if self.param else None


class ModelError(DeejaiError):
    code = -32010


class BackendUnavailableError(ModelError):
    code = -32011


class WorkerDiedError(DeejaiError):
    """A worker process died (crash, signal, ``os._exit``) while it ran a task.

    Only the task that worker was running fails with this error; the pool replaces the worker.
    """

    code = -32080


class TaskTimeoutError(WorkerDiedError):
    """A task ran past the pool's time limit; its worker was killed and replaced."""

    code = -32081


class ClusterError(DeejaiError):
    """The Dask cluster a scan runs on cannot be used: the scheduler cannot be reached or went
    away, it has no workers, or a worker cannot read the music. A scan stops on it; what
    finished is committed."""

    code = -32085


class ClusterMismatchError(ClusterError):
    """A Dask worker runs another deejai version or another model (name, variant or file
    sha256) than the scanning machine; its vectors would not mix with the library's."""

    code = -32086


class AudioError(DeejaiError):
    """A file could not be decoded; ``str()`` names the file and the reason."""

    code = -32020

    def __init__(self, path: Any, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # pickled across the scan's worker processes: rebuild from (path, reason)
        return (type(self), (self.path, self.reason))

    def data(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


class UnsupportedFormatError(AudioError):
    code = -32021


class EmptyAudioError(AudioError):
    code = -32022


class LibraryError(DeejaiError):
    code = -32030


class LibraryEmptyError(LibraryError):
    code = -32031

    def __init__(self, message: str = "the library is empty: run `deejai scan ~/Music` first"):
        super().__init__(message)


class ScanRunningError(LibraryError):
    code = -32032


class LibraryDamagedError(LibraryError):
    """The library database is damaged (a corrupt page, not a database) or was emptied.

    ``str()`` names the file and says what to do (``deejai doctor``); nothing is written to
    the file after this error.
    """

    code = -32033

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.path))

    def data(self) -> dict[str, Any] | None:
        return {"path": self.path} if self.path else None


class TrackNotFoundError(DeejaiError):
    code = -32040
    exit_code = 2


class AmbiguousTrackError(DeejaiError):
    """A query matched several tracks.

    Parameters
    ----------
    query : str
        What the user typed.
    candidates : sequence of dict
        The best matches, each at least ``{"id": int, "label": str}``.
    """

    code = -32041
    exit_code = 2

    def __init__(self, query: str, candidates: Sequence[dict[str, Any]], total: int | None = None):
        self.query = query
        self.candidates = list(candidates)
        self.total = max(int(total), len(self.candidates)) if total is not None else len(self.candidates)
        shown = "; ".join(f"[{c['id']}] {c['label']}" for c in self.candidates[:5])
        more = self.total - min(5, len(self.candidates))
        tail = f" (and {more} more)" if more > 0 else ""
        super().__init__(
            f"{query!r} matches {self.total} tracks: {shown}{tail}; "
            "be more specific or use the track id"
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.query, self.candidates, self.total))

    def data(self) -> dict[str, Any]:
        return {"query": self.query, "candidates": self.candidates, "total": self.total}


class PlaylistError(DeejaiError):
    code = -32050


class UnknownTagError(PlaylistError):
    """A ``tag:`` waypoint names a tag the model does not have (the message lists them)."""

    code = -32051
    exit_code = 2


class DaemonError(DeejaiError):
    """The daemon cannot be reached, or refused a call (too many connections, a timeout).

    Attributes
    ----------
    hint : str
        What to do next, one short sentence (empty when the message says it already).
    """

    code = -32060
    hint: str = ""

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        if hint is not None:
            self.hint = hint
        if self.hint and self.hint not in message:
            message = f"{message}; {self.hint}" if message else self.hint
        super().__init__(message)


class DaemonNotRunning(DaemonError):
    """No daemon answers at any address a client looked at (never sent on the wire).

    A front end may start one (:func:`deejai.engine.connect` with ``start=True``) or run the
    engine in its own process (``fallback="in-process"``).
    """

    hint = "start it with `deejai serve`"


class ConnectionLost(DaemonError):
    """The connection to the daemon broke during a call (never sent on the wire).

    The daemon stopped or crashed; the call may or may not have run. Connect again to go on.
    """

    hint = "start the daemon again with `deejai serve` and retry"


class AuthenticationFailed(DaemonError):
    """A TCP daemon refused the connection's token (or got none in time)."""

    code = -32061
    hint = "set DEEJAI_TOKEN to the daemon's token, or connect on the daemon's machine"


#: The old name of :class:`AuthenticationFailed`.
UnauthorisedError = AuthenticationFailed


class PluginError(DeejaiError):
    code = -32070


class SinkError(DeejaiError):
    """A playlist sink (such as MPD) cannot be reached, or refused the playlist."""

    code = -32075


class TrayUnavailableError(DeejaiError):
    """No system tray can be shown here: no display, no pystray backend, or no tray to dock in."""

    code = -32090


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_code(code: int, message: str, data: Any = None) -> DeejaiError:
    """Rebuild the exception a daemon reported, for the client side.

    Parameters
    ----------
    code : int
        The JSON-RPC ``error.code``.
    message : str
        The JSON-RPC ``error.message``, shown as is.
    data : any
        The JSON-RPC ``error.data``; ``candidates`` and ``path`` are restored when present.

    Returns
    -------
    DeejaiError
        An instance of the class registered for ``code`` (``DaemonError`` when unknown).
    """
    for cls in [DeejaiError, *_all_subclasses(DeejaiError)]:
        if cls.code == code and cls is not DeejaiError:
            break
    else:
        cls = DaemonError if code != DeejaiError.code else DeejaiError
    err = Exception.__new__(cls)
    Exception.__init__(err, message)
    if isinstance(data, dict):
        for key in ("candidates", "query", "total", "path", "reason", "param"):
            if key in data:
                setattr(err, key, data[key])
    return err
