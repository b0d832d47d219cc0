"""Scanning on a Dask distributed cluster: the same scan, analysed on many machines.

``deejai scan --executor tcp://scheduler:8786 ~/Music`` runs the scan of
:func:`deejai.engine.scan.scan` unchanged — the walk, the diff with the library, the single
SQLite writer, the batched commits, the progress bar — but the analyses run on the workers of
a running Dask cluster (``dask scheduler`` and ``dask worker --nworkers N --nthreads 1``;
``docs/cluster.md``). :class:`ClusterExecutor` is the :class:`concurrent.futures.Executor`
the scan drives::

    ClusterExecutor(address, model=...)
        distributed.Client(address)          one-line ClusterError when unreachable
        register_plugin(ModelPlugin)         every worker, and every worker that joins later,
                                             loads the model once (not once per task)
        client.run(identity probe)           deejai version, model name, variant and the model
                                             file's sha256 of every worker == this machine's,
                                             or ClusterMismatchError before any analysis
    executor.submit_analysis(file, ...)      one task per file: the worker reads it by path
                                             (shared filesystem) or, with ship_audio, gets
                                             its bytes from this machine
        -> concurrent.futures.Future         set as the task finishes (results stream back)

Faults, as the scan sees them:

* a worker killed mid-task: the scheduler runs its tasks on other workers, up to its
  ``distributed.scheduler.allowed-failures`` times (Dask's default: 3); then the file fails
  with :class:`~deejai.engine.errors.WorkerDiedError`, the pool's error for a worker that
  died under a file, which the scan records as a *transient* error (the next scan tries the
  file again) without a retry of its own (:attr:`ClusterExecutor.retries_dead_workers`);
* the scheduler lost mid-scan: the pending futures fail with
  :class:`~deejai.engine.errors.ClusterError`, which stops the scan; what finished is
  committed and the next scan goes on from there;
* a worker that runs another deejai or model, found at the start or when it joins later:
  every task checks its worker's identity against this machine's before it analyses, so a
  vector from another model never comes back; the scan stops with
  :class:`~deejai.engine.errors.ClusterMismatchError`.

The workers run the model variant this machine would run (:func:`deejai.engine.model.
choose_variant`), so the vectors equal the local pool's and a library can mix both.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Executor, Future, InvalidStateError, ThreadPoolExecutor
from typing import Any, Callable

from deejai.engine.errors import (
    AudioError,
    ClusterError,
    ClusterMismatchError,
    ConfigError,
    DeejaiError,
    WorkerDiedError,
)

try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # the dask extra is not installed; ClusterExecutor says so
    _WorkerPlugin = object  # type: ignore[assignment,misc]

__all__ = [
    "ClusterExecutor",
    "ModelPlugin",
    "WorkerFileError",
    "identity",
    "mismatch",
    "is_address",
    "analyse_task",
    "PLUGIN_NAME",
    "IDENTITY_KEYS",
    "CONNECT_TIMEOUT_S",
]

log = logging.getLogger(__name__)

#: Name the worker plugin is registered under (one per cluster: a new scan replaces it).
PLUGIN_NAME = "deejai-model"

#: What must be equal on the scanning machine and on every worker.
IDENTITY_KEYS = ("deejai", "model", "variant", "sha256")

#: Seconds to wait for the scheduler to answer, and for a first worker, at the start; Dask's
#: ``distributed.comm.timeouts.connect`` wins when it is shorter.
CONNECT_TIMEOUT_S = 10.0

#: Bytes of shipped files (``ship_audio``) in flight at most: the scanning machine and the
#: scheduler hold them until their tasks finish (a file bigger than this still goes, alone).
SHIP_BUDGET_BYTES = 256 * 2**20

#: Prefix of the scan's task keys (the Dask dashboard groups tasks by it).
TASK_PREFIX = "deejai-analyse"

#: Address schemes of Dask's comm layer.
_SCHEMES = ("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")


class WorkerFileError(AudioError):
    """A worker cannot read a file by its path (raised on the worker; see ``ship_audio``)."""


# ----------------------------------------------------------------------------- identity


def deejai_version() -> str:
    """The installed deejai's version (``"unknown"`` when it is not installed as a package)."""
    from importlib import metadata

    try:
        return metadata.version("deejai")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree on sys.path
        return "unknown"


def identity(model: Any) -> dict[str, str]:
    """What makes a worker's vectors the same as this machine's.

    Parameters
    ----------
    model : deejai.engine.model.Model
        A loaded model (its file's sha256 was checked against its card when it loaded).

    Returns
    -------
    dict
        ``deejai`` (version), ``model`` (the card's name), ``variant`` and ``sha256`` (of the
        variant's ``.tflite`` file), the keys of :data:`IDENTITY_KEYS`.
    """
    card = model.card
    return {
        "deejai": deejai_version(),
        "model": str(card.name),
        "variant": str(model.variant),
        "sha256": str(card.variants[model.variant]["sha256"]),
    }


def expected_identity(model_name: str, variant: str) -> dict[str, str]:
    """:func:`identity` of ``model_name``'s ``variant`` from its card, without loading it.

    Raises
    ------
    ModelError
        No such model or variant, or the file does not match the card.
    """
    from deejai.engine.model import load_card, verified_file

    card = load_card(model_name)
    _, digest = verified_file(card, variant)
    return {"deejai": deejai_version(), "model": str(card.name), "variant": variant,
            "sha256": digest}


def mismatch(expected: dict[str, str], found: Any) -> str | None:
    """Why ``found`` (a worker's identity, or its error) differs from ``expected``; None if
    it does not. One phrase, e.g. ``"deejai 0.2.0 (here 0.1.0)"``."""
    if not isinstance(found, dict):
        return f"cannot tell its deejai and model ({found})"
    if found.get("error"):
        return str(found["error"])
    diffs = []
    for key in IDENTITY_KEYS:
        if found.get(key) != expected.get(key):
            a, b = str(found.get(key)), str(expected.get(key))
            if key == "sha256":
                a, b = a[:12] + "…", b[:12] + "…"
            label = "model file sha256" if key == "sha256" else key
            diffs.append(f"{label} {a} (here {b})")
    return ", ".join(diffs) or None


# ------------------------------------------------------------------------ the worker side

#: Per worker process: the loaded models of the current spec, its identity or error.
#: ``loads`` counts the interpreters loaded for the spec (tests check: one per worker thread).
_STATE: dict[str, Any] = {"spec": None, "identity": None, "error": None, "models": [], "loads": 0}
_STATE_LOCK = threading.Lock()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        import socket

        return f"{socket.gethostname()} (pid {os.getpid()})"


def _new_model(model_name: str, variant: str) -> Any:
    """One interpreter of the model, as a scan's pool worker loads it (one thread)."""
    from deejai.engine.model import Model
    from deejai.engine.scan import WORKER_BATCH

    return Model(model_name, threads=1, batch_size=WORKER_BATCH, variant=variant)


def _prepare(model_name: str, variant: str) -> dict[str, Any]:
    """Load ``model_name``'s ``variant`` in this worker process once (thread-safe).

    Returns ``{"identity": dict | None, "error": str | None}``; never raises for a model
    that cannot load (the error is recorded, and every task on this worker reports it).
    """
    with _STATE_LOCK:
        if _STATE["spec"] != (model_name, variant):
            from deejai.engine.scan import limit_threads

            for m in _STATE["models"]:
                m.close()
            _STATE.update(spec=(model_name, variant), identity=None, error=None, models=[],
                          loads=0)
            limit_threads()
            try:
                model = _new_model(model_name, variant)
                model.warm_up()
                _STATE["loads"] += 1
            except DeejaiError as exc:
                _STATE["error"] = f"cannot load the model {model_name} ({variant}): {exc}"
                _STATE["identity"] = {"deejai": deejai_version()}
            else:
                _STATE["models"].append(model)
                _STATE["identity"] = identity(model)
        return {"identity": _STATE["identity"], "error": _STATE["error"]}


def _identity_probe(model_name: str, variant: str) -> dict[str, Any]:
    """Run on every worker at the start (``client.run``): its identity, or its error."""
    state = _prepare(model_name, variant)
    if state["error"]:
        return {**(state["identity"] or {}), "error": state["error"]}
    return dict(state["identity"])


def _file_probe(path: str, size: int) -> str | None:
    """Run on every worker at the start: None when it sees ``path`` with this ``size``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if st.st_size != size:
        return f"it is {st.st_size} bytes there, {size} here"
    return None


class ModelPlugin(_WorkerPlugin):  # type: ignore[misc,valid-type]
    """Loads the scan's model once in every worker, and in every worker that joins later.

    Registered by :class:`ClusterExecutor` (``client.register_plugin``); Dask runs
    :meth:`setup` on each worker when it is registered and when a worker connects later. A
    model that cannot load is recorded, not raised: every task on that worker then fails
    with :class:`~deejai.engine.errors.ClusterMismatchError`.

    Parameters
    ----------
    model_name : str
        A model card name or folder.
    variant : str
        The card's variant to load (``"int8"``, ``"fp32"``...).
    """

    name = PLUGIN_NAME
    idempotent = False

    def __init__(self, model_name: str, variant: str) -> None:
        self.model_name = model_name
        self.variant = variant

    async def setup(self, worker: Any) -> None:
        import asyncio

        # loading takes a second; off the worker's event loop, so its heartbeats go on
        await asyncio.get_running_loop().run_in_executor(
            None, _prepare, self.model_name, self.variant)

    def teardown(self, worker: Any) -> None:
        with _STATE_LOCK:
            for m in _STATE["models"]:
                m.close()
            _STATE.update(spec=None, identity=None, error=None, models=[], loads=0)


def _borrow(model_name: str, variant: str, expected: dict[str, str]) -> Any:
    """A model of this worker for one task (each thread gets its own interpreter)."""
    state = _prepare(model_name, variant)
    why = mismatch(expected, {**(state["identity"] or {}), "error": state["error"]})
    if why:
        raise ClusterMismatchError(f"worker {_worker_address()}: {why}")
    with _STATE_LOCK:
        if _STATE["models"]:
            return _STATE["models"].pop()
    model = _new_model(model_name, variant)
    with _STATE_LOCK:  # a worker with --nthreads > 1: one interpreter per busy thread
        _STATE["loads"] += 1
    return model


def _loads() -> int:
    """Interpreters this worker process loaded (``client.run`` from the tests)."""
    return int(_STATE["loads"])


def _give_back(model_name: str, variant: str, model: Any) -> None:
    with _STATE_LOCK:
        if _STATE["spec"] == (model_name, variant):
            _STATE["models"].append(model)
            return
    model.close()


def analyse_task(
    path: str,
    model_name: str,
    variant: str,
    expected: dict[str, str],
    patches: int | None = None,
    data: bytes | None = None,
    size: int | None = None,
    mtime_ns: int | None = None,
) -> Any:
    """The task a worker runs for one file: :func:`deejai.engine.analyse.analyse`.

    Parameters
    ----------
    path : str
        The file's absolute path on the scanning machine.
    model_name, variant : str
        The model to analyse with (loaded once per worker by :class:`ModelPlugin`).
    expected : dict
        The scanning machine's :func:`identity`; a worker whose own differs raises.
    patches : int, optional
        ``k`` of :func:`~deejai.engine.analyse.analyse`.
    data : bytes, optional
        The file's content (``ship_audio``); analysed from a temporary file on the worker,
        and the result carries ``path``, ``size`` and ``mtime_ns`` of the scanning machine.
        None: the worker reads ``path`` itself (a shared filesystem).
    size, mtime_ns : int, optional
        The file's size and modification time on the scanning machine (with ``data``).

    Returns
    -------
    TrackAnalysis

    Raises
    ------
    ClusterMismatchError
        This worker runs another deejai or model than ``expected``.
    WorkerFileError
        This worker cannot see ``path`` (without ``data``).
    AudioError
        The file cannot be decoded.
    """
    from deejai.engine.analyse import analyse

    model = _borrow(model_name, variant, expected)
    try:
        if data is None:
            if not os.path.exists(path):
                raise WorkerFileError(path, f"no such file on the worker {_worker_address()}")
            return analyse(path, model, k=patches)
        suffix = os.path.splitext(path)[1]
        fd, tmp = tempfile.mkstemp(prefix="deejai-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                result = analyse(tmp, model, k=patches)
            except AudioError as exc:  # name the file the user knows, not the copy
                raise type(exc)(path, exc.reason) from None
        finally:
            os.unlink(tmp)
        result.path = path
        result.size = int(size if size is not None else len(data))
        if mtime_ns is not None:
            result.mtime_ns = int(mtime_ns)
        return result
    finally:
        _give_back(model_name, variant, model)


# ------------------------------------------------------------------------ the client side


def is_address(text: str) -> bool:
    """True when ``text`` names a Dask scheduler (``tcp://host:8786``, ``tls://...``,
    ``host:8786``) rather than a local executor (``"local"``, ``"process"``, ``"thread"``)."""
    text = text.strip()
    if text.startswith(_SCHEMES):
        return True
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit())


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError("scanning on a Dask cluster needs the dask extra: "
                          "pip install 'deejai[dask]' (here and on every worker)") from None
    return distributed


#: Client-side Dask loggers that print tracebacks of a lost connection on stderr; the scan
#: reports the fault itself, in one line (``DEEJAI_DEBUG=1`` keeps them).
_NOISY_LOGGERS = ("distributed.client", "distributed.utils", "distributed.comm",
                  "distributed.core", "distributed.batched")


def _quiet_dask_logs() -> None:
    if os.environ.get("DEEJAI_DEBUG", "") not in ("", "0"):
        return
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _unreadable(path: str, exc: OSError) -> Future:
    """A Future that failed as the scan's read of ``path`` did (an :class:`AudioError`)."""
    failed: Future = Future()
    failed.set_exception(AudioError(path, f"cannot read: {exc.strerror or exc}"))
    return failed


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class ClusterExecutor(Executor):
    """A :class:`concurrent.futures.Executor` that runs a scan's analyses on a Dask cluster.

    Parameters
    ----------
    address : str
        The scheduler, e.g. ``"tcp://10.0.0.2:8786"`` (``tls://`` with Dask's TLS settings,
        ``docs/cluster.md``).
    model : str, optional
        Model card name or folder (default ``deejai.models.DEFAULT_MODEL``); every worker must
        have the same one.
    ship_audio : bool
        Send each file's bytes from this machine to the workers (clusters without a shared
        filesystem). False: the workers read the files by path, which must be the same there.
    variant : str, optional
        The card's variant to run; None or ``"auto"``: the one this machine's own pool would
        run (:func:`~deejai.engine.model.choose_variant`), so the vectors equal a local
        scan's.
    connect_timeout_s : float, optional
        Seconds to wait for the scheduler, and for a first worker (default
        :data:`CONNECT_TIMEOUT_S`).

    Raises
    ------
    ConfigError
        ``distributed`` is not installed, or ``address`` is not an address.
    ClusterError
        The scheduler does not answer, or has no workers.
    ClusterMismatchError
        A worker runs another deejai version or model, or cannot import deejai.
    ModelError
        The model cannot be found or does not match its card on this machine.

    Notes
    -----
    :meth:`submit_analysis` is what :func:`deejai.engine.scan.scan` calls; :meth:`submit`
    runs any function on the cluster. Futures are the standard library's; cancelling one
    cancels its Dask task. :meth:`shutdown` cancels what is left, removes the worker plugin
    (the workers free the model) and closes the client; the cluster goes on running.
    """

    #: Dask's scheduler runs a task whose worker died on other workers (``allowed-failures``
    #: times): the scan records a :class:`WorkerDiedError` from here at once, as transient.
    retries_dead_workers = True

    def __init__(
        self,
        address: str,
        *,
        model: str | None = None,
        ship_audio: bool = False,
        variant: str | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        distributed = _import_distributed()
        _quiet_dask_logs()
        if not isinstance(address, str) or not is_address(address):
            raise ConfigError(f"{address!r} is not a Dask scheduler address "
                              "(e.g. tcp://10.0.0.2:8786)")
        from deejai.engine.model import choose_variant, load_card
        from deejai.models import DEFAULT_MODEL

        self.address = address.strip()
        self.model_name = str(model or DEFAULT_MODEL)
        self.ship_audio = bool(ship_audio)
        card = load_card(self.model_name)
        if variant in (None, "auto"):
            variant = choose_variant(card, threads=1)  # what init_worker's Model would run
        self.variant = str(variant)
        #: This machine's identity; every worker's must be the same.
        self.expected = expected_identity(self.model_name, self.variant)
        self._timeout_s = self._connect_timeout(connect_timeout_s)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Any, Future]] = {}  # Dask key -> (Dask future, ours)
        self._cancelled: set[str] = set()
        self._shutdown = False
        self._probed = False
        self._lost: str | None = None
        self._nthreads: tuple[float, int] = (0.0, 1)
        self._shipped: dict[str, int] = {}  # Dask key -> bytes of its shipped file
        self._ship_room = threading.Condition(self._lock)
        security = self._security(distributed)
        self._canceller = ThreadPoolExecutor(1, thread_name_prefix="deejai-dask-cancel")
        try:
            self._client = distributed.Client(self.address, timeout=self._timeout_s,
                                              security=security, set_as_default=False,
                                              name="deejai-scan")
        except (OSError, TimeoutError) as exc:
            self._canceller.shutdown(wait=False)
            why = _reason(exc).replace(f" to {self.address}", "")
            raise ClusterError(f"cannot reach the Dask scheduler at {self.address} ({why}); "
                               "is `dask scheduler` running there?") from None
        except ValueError as exc:  # an address Dask cannot parse
            self._canceller.shutdown(wait=False)
            raise ConfigError(f"{self.address}: not a Dask scheduler address ({_reason(exc)})"
                              ) from None
        except Exception as exc:  # noqa: BLE001 - e.g. a TLS handshake Dask could not make
            self._canceller.shutdown(wait=False)
            raise ClusterError(f"cannot connect to the Dask scheduler at {self.address} "
                               f"({_reason(exc)}); see docs/cluster.md") from None
        try:
            #: Worker address -> its identity, as the start-up check found them.
            self.workers = self._check_workers()
        except BaseException:
            self._canceller.shutdown(wait=False)
            self._close_client()
            raise

    # ------------------------------------------------------------------ start-up

    @staticmethod
    def _connect_timeout(given: float | None) -> float:
        if given is not None:
            return float(given)
        try:
            import dask
            from dask.utils import parse_timedelta

            configured = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
            return min(float(configured), CONNECT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a bad Dask setting: use ours
            return CONNECT_TIMEOUT_S

    def _security(self, distributed: Any) -> Any:
        """Dask's security settings (its configuration: TLS files, require-encryption), checked
        against the address before connecting, so a mistake is one clear line."""
        security = distributed.Security()
        tls = self.address.startswith(("tls://", "wss://"))
        if security.require_encryption and not tls:
            raise ConfigError(
                f"Dask's configuration requires encryption: use a tls:// address, not "
                f"{self.address} (docs/cluster.md)")
        if tls and security.get_connection_args("client").get("ssl_context") is None:
            raise ConfigError(
                f"{self.address} needs Dask's TLS settings for the client: "
                "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key "
                "(docs/cluster.md)")
        return security

    def _check_workers(self) -> dict[str, dict[str, Any]]:
        """Every worker loads the model (the plugin) and has this machine's identity."""
        client = self._client
        try:
            client.wait_for_workers(1, timeout=self._timeout_s)
        except (TimeoutError, OSError):
            raise ClusterError(
                f"the Dask scheduler at {self.address} has no workers; start some with "
                f"`dask worker {self.address} --nworkers N --nthreads 1`") from None
        install = f"install deejai {self.expected['deejai']} on every worker"
        try:
            client.register_plugin(ModelPlugin(self.model_name, self.variant), name=PLUGIN_NAME)
        except ImportError as exc:
            raise ClusterMismatchError(
                f"a worker of {self.address} cannot import deejai ({_reason(exc)}): {install}"
            ) from None
        found = client.run(_identity_probe, self.model_name, self.variant, on_error="return")
        bad = []
        for address, ident in sorted(found.items()):
            if isinstance(ident, ImportError):
                ident = f"it cannot import deejai: {_reason(ident)}"
            elif isinstance(ident, BaseException):
                ident = _reason(ident)
            why = mismatch(self.expected, ident)
            if why:
                bad.append(f"worker {address}: {why}")
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ClusterMismatchError(
                f"{bad[0]}{more}: every worker needs the same deejai and model "
                f"({self.expected['model']} {self.expected['variant']}); {install}")
        return found

    def _probe(self, path: str, size: int) -> None:
        """Every worker sees ``path`` (the first file of the scan) as this machine does."""
        found = self._client.run(_file_probe, path, size, on_error="return")
        for address, why in sorted(found.items()):
            if isinstance(why, BaseException):
                why = _reason(why)
            if why:
                raise ClusterError(
                    f"worker {address} cannot read {path} ({why}): every worker must see the "
                    "music at the same paths, or scan with --ship-audio")

    # ------------------------------------------------------------------ Executor

    @property
    def _max_workers(self) -> int:
        """Threads of the cluster's workers now (the scan keeps twice as many tasks out)."""
        at, n = self._nthreads
        if time.monotonic() - at >= 2.0 and self._lost is None:
            try:
                n = max(1, sum(self._client.nthreads().values()))
            except Exception:  # noqa: BLE001 - the scheduler went away: keep the last count
                pass
            self._nthreads = (time.monotonic(), n)
        return n

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; a standard Future.

        :func:`deejai.engine.scan.analyse_file` ``(path, model, patches)`` goes through
        :meth:`submit_analysis` (the identity check, ``ship_audio``), so a scan that submits
        it directly (a retry) gets the same treatment; any other function runs as it is.
        """
        from deejai.engine import scan as _scan

        if fn is _scan.analyse_file:
            return self._submit_analyse_file(*args, **kwargs)
        self._check_open()
        key = f"deejai-task-{uuid.uuid4().hex}"
        return self._bridge(self._client.submit(fn, *args, key=key, pure=False, **kwargs), "")

    def _submit_analyse_file(self, path: str, model: str, patches: int | None = None) -> Future:
        from deejai.engine.scan import FoundFile

        try:
            st = os.stat(path)
        except OSError as exc:
            return _unreadable(path, exc)
        return self.submit_analysis(FoundFile(str(path), int(st.st_size), int(st.st_mtime_ns)),
                                    model, patches)

    def submit_analysis(self, file: Any, model: str, patches: int | None = None) -> Future:
        """Analyse one file of a scan on the cluster.

        Parameters
        ----------
        file : deejai.engine.scan.FoundFile
            The file (``path``, ``size``, ``mtime_ns`` on this machine).
        model : str
            The scan's model; it must be this executor's.
        patches : int, optional
            ``k`` of :func:`~deejai.engine.analyse.analyse`.

        Returns
        -------
        concurrent.futures.Future
            Its result is the file's :class:`~deejai.engine.analyse.TrackAnalysis`. It fails
            with :class:`AudioError` (a bad file), :class:`WorkerDiedError` (workers died
            running it more often than the scheduler allows), :class:`ClusterError` (the
            scheduler went away, or a worker cannot read the file) or
            :class:`ClusterMismatchError`.

        Raises
        ------
        ClusterError
            At the first file without ``ship_audio``: a worker cannot read it.
        """
        self._check_open()
        if model != self.model_name:
            raise ValueError(f"this executor analyses with {self.model_name}, not {model}")
        path = str(file.path)
        if not self.ship_audio and not self._probed:
            self._probe(path, int(file.size))
            self._probed = True
        extra: dict[str, Any] = {}
        key = f"{TASK_PREFIX}-{uuid.uuid4().hex}"
        if self.ship_audio:
            self._wait_for_room(int(file.size))
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                    st = os.fstat(fh.fileno())
            except OSError as exc:
                return _unreadable(path, exc)
            extra = {"data": data, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
            with self._lock:
                self._shipped[key] = len(data)
        import dask

        # a shipped file travels inside its task; Dask warns about graphs over 10 MB
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "2GiB"}):
            dfut = self._client.submit(analyse_task, path, self.model_name, self.variant,
                                       self.expected, patches, key=key, pure=False, **extra)
        return self._bridge(dfut, path)

    def _wait_for_room(self, size: int) -> None:
        """Block until ``size`` more shipped bytes fit in :data:`SHIP_BUDGET_BYTES` (results
        arrive on Dask's callback thread meanwhile)."""
        with self._ship_room:
            while (self._shipped and sum(self._shipped.values()) + size > SHIP_BUDGET_BYTES
                   and self._lost is None and not self._shutdown):
                self._ship_room.wait(0.5)

    def _release(self, key: str) -> None:
        """Under the lock: a task ended; its shipped bytes no longer count."""
        if self._shipped.pop(key, None) is not None:
            self._ship_room.notify_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop: cancel the tasks left (``cancel_futures``) or wait for them (``wait``), remove
        the worker plugin and close the client. The cluster itself goes on running."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            left = list(self._pending.values())
        if left and cancel_futures:
            for _, fut in left:
                fut.cancel()
        elif left and wait and self._lost is None:
            from concurrent.futures import wait as wait_all

            wait_all([fut for _, fut in left])
        self._canceller.shutdown(wait=True)
        self._close_client()

    def _close_client(self) -> None:
        client = self._client
        if self._lost is None and client.status == "running":
            try:
                client.unregister_worker_plugin(PLUGIN_NAME)
            except Exception as exc:  # noqa: BLE001 - workers keep a model loaded; harmless
                log.debug("removing the worker plugin failed: %s", exc)
        try:
            client.close(timeout=5)
        except Exception as exc:  # noqa: BLE001 - a lost scheduler: nothing left to close
            log.debug("closing the Dask client failed: %s", exc)

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._lost is not None:
            raise ClusterError(self._lost)

    # ------------------------------------------------------------------ futures

    def _bridge(self, dfut: Any, path: str) -> Future:
        """A standard Future that follows the Dask future ``dfut``."""
        fut: Future = Future()
        key = dfut.key
        with self._lock:
            self._pending[key] = (dfut, fut)

        def on_cancel(f: Future) -> None:
            if f.cancelled():
                with self._lock:
                    self._cancelled.add(key)
                    self._pending.pop(key, None)
                    self._release(key)
                if self._lost is None:
                    try:  # never block the scan's thread on the scheduler
                        self._canceller.submit(self._cancel_remote, dfut)
                    except RuntimeError:  # the canceller is shut down: the client closes
                        pass

        fut.add_done_callback(on_cancel)
        dfut.add_done_callback(lambda d: self._settle(d, fut, path))
        return fut

    def _cancel_remote(self, dfut: Any) -> None:
        try:
            dfut.cancel()
        except Exception as exc:  # noqa: BLE001 - the scheduler went away meanwhile
            log.debug("cancelling %s failed: %s", dfut.key, exc)

    def _settle(self, dfut: Any, fut: Future, path: str) -> None:
        """Dask callback thread: pass the outcome of ``dfut`` on to ``fut``."""
        with self._lock:
            self._pending.pop(dfut.key, None)
            self._release(dfut.key)
            ours = dfut.key in self._cancelled
        if fut.done() or ours:
            return
        try:
            status = dfut.status
            if status == "finished":
                result = dfut.result()
                outcome: Any = self._checked(result, path)
            elif status == "cancelled":
                outcome = self._lost_scheduler()
            else:
                outcome = self._translate(dfut.exception(), path)
        except BaseException as exc:  # noqa: BLE001 - fetching the result failed
            outcome = self._translate(exc, path)
        try:
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        except InvalidStateError:  # cancelled by the scan meanwhile
            pass

    def _checked(self, result: Any, path: str) -> Any:
        model = getattr(result, "model", None)
        if path and model is not None and model != self.expected["model"]:
            return ClusterMismatchError(
                f"a worker analysed {path} with the model {model}, not {self.expected['model']}")
        return result

    def _lost_scheduler(self) -> ClusterError:
        text = self._lost or (f"lost the connection to the Dask scheduler at {self.address}; "
                              "what finished is kept, scan again to go on")
        self._lost = text
        return ClusterError(text)

    def _translate(self, exc: BaseException | None, path: str) -> BaseException:
        """The scan's error for a task's failure."""
        from concurrent.futures import CancelledError

        from distributed.scheduler import KilledWorker

        if exc is None:  # pragma: no cover - Dask reports an error without one
            return ClusterError(f"{path}: the Dask task failed without an error")
        if isinstance(exc, KilledWorker):
            last = getattr(getattr(exc, "last_worker", None), "address", "?")
            n = int(exc.allowed_failures) + 1
            return WorkerDiedError(
                f"{n} Dask worker{'s' if n != 1 else ''} died while analysing this file "
                f"(the last: {last})")
        if isinstance(exc, WorkerFileError):
            if os.path.exists(path):  # here it is: the worker does not share the filesystem
                return ClusterError(
                    f"{exc.reason}: every worker must see {path} at the same path, or scan "
                    "with --ship-audio")
            return AudioError(path, "no such file (it went away during the scan)")
        if isinstance(exc, ImportError):  # the worker could not load deejai's task
            return ClusterMismatchError(
                f"a worker of {self.address} cannot import deejai ({_reason(exc)}): install "
                f"deejai {self.expected['deejai']} on every worker")
        if isinstance(exc, CancelledError):
            return self._lost_scheduler()
        if isinstance(exc, (OSError, TimeoutError)) and self._client.status != "running":
            return self._lost_scheduler()
        return exc
