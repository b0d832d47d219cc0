"""The Engine facade: the one object every front end calls.

The command line, the daemon (:mod:`deejai.engine.rpc`), the Kivy app and the tray icon all
talk to an :class:`Engine`, in process or through :class:`deejai.engine.rpc.Client`, which has
the same method names, keyword parameters and JSON-serialisable results. Each public method is
marked with :func:`~deejai.engine.methods.exposed` under its wire name; :data:`ENGINE_METHODS`
is the resulting method table, the contract of ``docs/protocol.md``.

Threading: the daemon calls the facade from a pool of threads. Each thread reads SQLite through
its own connection; a scan runs on its own thread with the library's single writer connection,
and readers see the last committed state (SQLite WAL). The vector index and the in-memory
catalogue are rebuilt when the library revision changes, so queries pick up what a scan
commits.

Events: :meth:`Engine.subscribe` registers ``callback(event, params)`` for

* ``scan.progress`` ``{job, done, total, errors, rate, eta_s, model, reanalyse}`` (at most ~5
  per second; ``reanalyse``: how many of ``total`` are unchanged tracks analysed again because
  they have no vector for ``model`` yet),
* ``scan.finished`` ``{job, state, summary, error}``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Mapping, Sequence

from msgspec import Meta

from deejai.engine.config import Paths, load_settings, paths as default_paths
from deejai.engine.errors import (
    ConfigError,
    DeejaiError,
    InvalidParamsError,
    LibraryEmptyError,
    PlaylistError,
    ScanRunningError,
)
from deejai.engine.methods import Method, exposed, method_table
from deejai.engine.search import MAX_QUERY_CHARS, check_query
from deejai.models import DEFAULT_MODEL

__all__ = ["Engine", "ScanJob", "ENGINE_METHODS", "EventCallback"]

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict], None]

#: File name, in the state folder, of the last playlist an engine made.
LAST_PLAYLIST_NAME = "last-playlist.json"

#: Seconds between two ``scan.progress`` events.
PROGRESS_INTERVAL_S = 0.2
#: The largest SQLite integer (``LIMIT`` takes no more).
MAX_INT64 = 2**63 - 1

# Types of the method table's parameters that carry their range (checked by msgspec when a
# request is bound, so the daemon answers -32602 naming the parameter).
Count = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Workers = Annotated[int, Meta(ge=0)]
QueryText = Annotated[str, Meta(max_length=MAX_QUERY_CHARS)]


@dataclass
class ScanJob:
    """State of one background scan, as :meth:`Engine.scan_status` reports it."""

    job: str
    roots: list[str]
    state: str = "running"  # running, finished, cancelled, failed
    done: int = 0
    total: int = 0
    errors: int = 0
    rate: float = 0.0
    eta_s: float | None = None
    reanalyse: int = 0  # unchanged tracks analysed again for a new model
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "roots": self.roots,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "errors": self.errors,
            "rate": self.rate,
            "eta_s": self.eta_s,
            "reanalyse": self.reanalyse,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "summary": self.summary,
            "error": self.error,
        }


class Engine:
    """deejai's facade: scan the library, look tracks up, make and export playlists.

    Parameters
    ----------
    paths : Paths, optional
        Where the library lives; default :func:`deejai.engine.config.paths` (``DEEJAI_HOME``).
    settings : dict, optional
        Settings; default :func:`deejai.engine.config.load_settings`.
    index_backend : {"auto", "faiss", "numpy"}
        Vector index implementation; "auto" prefers FAISS and falls back to NumPy.
    scan_executor : {"process", "thread"}, optional
        Where scans analyse files: a pool of worker processes (the default, and the fast
        choice on a desktop), or threads in this process, for platforms that cannot start
        processes (Android, iOS). Default: the ``scan_executor`` setting, else "process".
    exporters : iterable or mapping of exporters, optional
        The playlist formats :meth:`export` can write (``name``, ``extension``,
        ``media_type``, ``render``); the composition root hands over the plugins' ones
        (:func:`deejai.plugins.manager.build_engine`). None: no formats.
    sinks : mapping, optional
        Sink name -> sink (``send(playlist, settings_section, **options)``), for
        :meth:`send`.

    Every public method takes keyword parameters and returns JSON-serialisable values, so the
    same call works in process and over the daemon's socket. Errors are
    :class:`~deejai.engine.errors.DeejaiError` subclasses.
    """

    def __init__(
        self,
        *,
        paths: Paths | None = None,
        settings: dict[str, Any] | None = None,
        index_backend: str = "auto",
        scan_executor: str | None = None,
        exporters: Any = None,
        sinks: Mapping[str, Any] | None = None,
    ) -> None:
        from deejai.engine.export import Exporters

        self.paths = (paths or default_paths()).ensure()
        self.settings = settings if settings is not None else load_settings(self.paths)
        self.model_name: str = str(self.settings.get("model") or DEFAULT_MODEL)
        self.index_backend = index_backend
        self.scan_executor = str(scan_executor or self.settings.get("scan_executor") or "process")
        if self.scan_executor not in ("process", "thread"):
            raise ConfigError(
                f"scan_executor must be 'process' or 'thread', not {self.scan_executor!r}"
            )
        self.exporters = exporters if isinstance(exporters, Exporters) else Exporters(
            exporters or ())
        self.sinks: dict[str, Any] = dict(sinks or {})
        self._local = threading.local()
        self._libraries: list[Any] = []
        self._lib_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: tuple[int, Any, Any] | None = None  # (revision, catalogue, index)
        self._records_cache: tuple[int, list[dict[str, Any]]] | None = None
        self._jobs: dict[str, ScanJob] = {}
        self._jobs_lock = threading.Lock()
        self._subscribers: list[EventCallback] = []
        self._sub_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _library(self) -> Any:
        """This thread's read connection to the library (opened on first use)."""
        lib = getattr(self._local, "library", None)
        if lib is None:
            from deejai.engine.library import Library

            lib = Library(self.paths.library_file)
            self._local.library = lib
            with self._lib_lock:
                self._libraries.append(lib)
        return lib

    def _emit(self, event: str, params: dict[str, Any]) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event, params)
            except Exception:  # a broken front end must not break the engine
                log.exception("event subscriber failed on %s", event)

    def _catalogue_and_index(self) -> tuple[Any, Any]:
        """The catalogue and vector index for the current library revision (cached)."""
        lib = self._library()
        revision = lib.revision
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == revision:
                return self._cache[1], self._cache[2]
            from deejai.engine.index import open_index

            model = lib.serving_model(self.model_name)
            catalogue = lib.catalogue(model)
            if len(catalogue) == 0:
                raise LibraryEmptyError()
            prefer = "faiss" if self.index_backend == "auto" else self.index_backend
            index = open_index(lib, model, prefer=prefer)
            self._cache = (revision, catalogue, index)
            return catalogue, index

    def _entries(self, ids: Sequence[int], distances: Sequence[float]) -> list[Any]:
        from deejai.engine.catalogue import PlaylistEntry

        lib = self._library()
        entries = []
        for track_id, dist in zip(ids, distances):
            rec = lib.track(int(track_id)) or {}
            entries.append(
                PlaylistEntry(
                    id=int(track_id),
                    path=str(rec.get("path", "")),
                    artist=str(rec.get("artist") or ""),
                    title=str(rec.get("title") or ""),
                    album=str(rec.get("album") or ""),
                    duration_s=float(rec.get("duration_s") or 0.0),
                    distance=float(dist),
                )
            )
        return entries

    def _records(self) -> list[dict[str, Any]]:
        """id, path, artist, title, album of every track, cached per library revision."""
        lib = self._library()
        revision = lib.revision
        cached = self._records_cache
        if cached is not None and cached[0] == revision:
            return cached[1]
        records = lib.records()
        self._records_cache = (revision, records)
        return records

    def _resolve_id(self, spec: Any) -> int:
        from deejai.engine.resolve import resolve_track

        return int(resolve_track(spec, self._records()))

    @staticmethod
    def _check_seed(seed: Any) -> int | None:
        if seed is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise PlaylistError(f"seed must be a whole number from 0 to 2**63-1, not {seed!r}")
        return seed

    def _constraints(self, no_repeat_artist: bool, max_duration_s: float | None) -> Any:
        from deejai.engine.playlist import Constraints

        if max_duration_s is not None and float(max_duration_s) < 0:
            raise PlaylistError("max_duration_s must be positive")

        return Constraints(
            no_repeat_artist=bool(no_repeat_artist),
            max_duration_s=None if max_duration_s in (None, 0) else float(max_duration_s),
        )

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event, params)`` for every event; returns an unsubscribe function."""
        with self._sub_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._sub_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ scan
    @exposed("library.scan", result='`{"job": str, "workers": int}` at once; the scan runs in '
             'the background',
             notes={"patches": "patches per track; 0: every patch",
                    "paths": "absolute; `~` is expanded",
                    "workers": "0 or null: the setting; at most the cores",
                    "prune": "also remove tracks under missing, empty or unreadable folders",
                    "executor": "a Dask scheduler address, or local/process/thread",
                    "ship_audio": "send the files' bytes to the Dask workers"})
    def scan(
        self,
        paths: Sequence[str] | None = None,
        workers: Workers | None = None,
        retry_errors: bool = False,
        patches: int | None = None,
        prune: bool = False,
        executor: str | None = None,
        ship_audio: bool | None = None,
    ) -> dict[str, Any]:
        """Start a scan of ``paths`` in the background and return ``{"job": id}`` at once.

        Parameters
        ----------
        paths : list of str, optional
            Folders (or files) to scan, as absolute paths (``~`` is expanded; a relative path
            is refused, as the daemon does not share the caller's working folder); default:
            the settings' ``music_dirs``.
        workers : int, optional
            Worker processes; default (None or 0): the settings' ``workers`` or the number of
            CPU cores. At most the number of CPU cores, or the ``max_workers`` setting when it
            is larger: a larger value is lowered to that (the result says how many).
        retry_errors : bool
            Analyse again files that failed before even when they did not change.
        patches : int, optional
            Patches (~3 s windows) analysed per track: more is slower and closer to the whole
            track; 0 analyses every patch. Default: the ``patches`` setting, else
            :data:`deejai.engine.analyse.DEFAULT_PATCHES`. Tracks already in the library keep
            their vectors until they change.
        prune : bool
            Remove every track under ``paths`` that the scan does not find. By default a
            track is removed only when its file is known to be gone: tracks under a folder
            that cannot be read, an empty folder or a missing root (an unmounted drive) are
            kept, and the summary's ``kept_why`` says so.
        executor : str, optional
            Where the files are analysed: a Dask scheduler's address (``tcp://host:8786``,
            ``tls://...``; ``docs/cluster.md``) whose workers analyse them, or ``"local"``
            (this machine, as ``scan_executor`` says), ``"process"`` or ``"thread"``. Default:
            the ``executor`` setting, else local. On a cluster, ``workers`` is ignored.
        ship_audio : bool, optional
            With a Dask executor, send each file's bytes to the workers instead of letting
            them read it by path. Default: the ``ship_audio`` setting.

        Raises
        ------
        ScanRunningError
            When this engine is already scanning.
        ConfigError
            When no folder is given and none is configured, a path is relative or empty, or
            a path does not exist and the library holds no track under it, or ``executor`` is
            neither an address nor a local executor.
        InvalidParamsError
            ``workers`` is negative or not a whole number.

        Returns
        -------
        dict
            ``{"job": str, "workers": int}``: the job id and the workers it may use (on a Dask
            cluster the cluster's workers decide instead).

        Notes
        -----
        A cluster that cannot be reached, or whose workers run another deejai or model,
        fails the job (``state`` ``"failed"``, ``error`` one line naming the address or the
        worker) before anything is analysed.
        """
        # absolute already: the front end (or the settings loader) made them so, at the edge;
        # a relative one would resolve against the daemon's working folder, so it is refused
        roots = []
        for p in (paths or self.settings.get("music_dirs") or []):
            text = os.path.expanduser(str(p))
            if not text.strip() or not os.path.isabs(text):
                raise ConfigError(
                    f"{str(p)!r} is not an absolute path: give music folders as absolute paths "
                    "(the daemon does not share your working folder)")
            roots.append(os.path.normpath(text))
        if not roots:
            raise ConfigError("no music folder given: run `deejai scan ~/Music`")
        self._library()  # an emptied or unreadable library is refused here, not in the job
        for root in roots:
            # a missing root that holds tracks is an unmounted drive: the scan keeps them
            if not os.path.exists(root) and not self._library().count_under(root):
                raise ConfigError(f"{root}: no such file or folder")
        n_workers = self._workers(workers)
        if patches is None and self.settings.get("patches") is not None:
            patches = int(self.settings["patches"])
        if patches is not None and (isinstance(patches, bool) or int(patches) < 0):
            raise ConfigError(f"patches must be 0 (every patch) or more, not {patches!r}")
        where = self._scan_executor(executor)
        if ship_audio is None:
            ship_audio = bool(self.settings.get("ship_audio") or False)
        with self._jobs_lock:
            for job in self._jobs.values():
                if job.state == "running":
                    raise ScanRunningError(f"a scan is already running (job {job.job})")
            job = ScanJob(job=uuid.uuid4().hex[:12], roots=roots)
            self._jobs[job.job] = job
        job.thread = threading.Thread(
            target=self._run_scan,
            args=(job, n_workers, bool(retry_errors), patches, bool(prune), where,
                  bool(ship_audio)),
            name=f"deejai-scan-{job.job}",
            daemon=True,
        )
        job.thread.start()
        return {"job": job.job, "workers": n_workers}

    def _workers(self, workers: Any) -> int:
        """The scan's worker count: asked for, else the setting, else the cores; capped."""
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 0):
            raise InvalidParamsError(
                f"workers must be a whole number, 0 or more (0: the default), not {workers!r}",
                "workers")
        try:
            setting = int(self.settings.get("workers") or 0)
            ceiling = int(self.settings.get("max_workers") or 0)
        except (TypeError, ValueError):
            raise ConfigError("the workers and max_workers settings must be whole numbers"
                              ) from None
        from deejai.engine.pool import default_workers

        cores = default_workers()  # the CPU cores this process may use
        cap = max(cores, ceiling)
        wanted = workers or setting or cores
        if wanted > cap:
            log.info("scan: %d workers asked for, %d used (the cores%s)", wanted, cap,
                     "; max_workers raises it" if ceiling <= cores else
                     ", as max_workers allows")
        return max(1, min(wanted, cap))

    def _scan_executor(self, executor: str | None) -> str:
        """``"process"``, ``"thread"`` or a Dask scheduler address, from the parameter, the
        ``executor`` setting and ``scan_executor``."""
        text = executor if executor is not None else self.settings.get("executor")
        text = str(text).strip() if text is not None else "local"
        if text in ("", "local"):
            return self.scan_executor
        if text in ("process", "thread"):
            return text
        from deejai.engine.cluster import is_address

        if not is_address(text):
            raise ConfigError(
                f"executor must be a Dask scheduler address such as tcp://10.0.0.2:8786, or "
                f"local, process or thread, not {text!r}")
        return text

    def _run_scan(
        self, job: ScanJob, workers: int | None, retry_errors: bool, patches: int | None = None,
        prune: bool = False, where: str = "process", ship_audio: bool = False,
    ) -> None:
        from deejai.engine.library import Library
        from deejai.engine.scan import scan as run_scan

        last = [0.0]

        def on_progress(done: int, total: int, errors: int, rate: float, eta_s: float | None) -> None:
            job.done, job.total, job.errors, job.rate, job.eta_s = done, total, errors, rate, eta_s
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or done >= total:
                last[0] = now
                self._emit(
                    "scan.progress",
                    {"job": job.job, "done": done, "total": total, "errors": errors,
                     "rate": rate, "eta_s": eta_s, "model": self.model_name,
                     "reanalyse": job.reanalyse},
                )

        def on_plan(plan: Any) -> None:
            job.reanalyse = len(plan.reanalyse)

        library = None
        executor: Any = None
        variant = str(self.settings.get("model_variant") or "auto")
        try:
            if where == "thread":
                from concurrent.futures import ThreadPoolExecutor

                executor = ThreadPoolExecutor(max_workers=workers or 1,
                                              thread_name_prefix="deejai-analyse")
            elif where != "process":
                from deejai.engine.cluster import ClusterExecutor

                executor = ClusterExecutor(where, model=self.model_name, variant=variant,
                                           ship_audio=ship_audio)
            library = Library(self.paths.library_file)
            summary = run_scan(
                library,
                job.roots,
                workers=workers,
                executor=executor,
                retry_errors=retry_errors,
                model=self.model_name,
                on_progress=on_progress,
                should_stop=job.cancel.is_set,
                patches=patches,
                on_plan=on_plan,
                variant=variant,
                prune=prune,
            )
            job.summary = summary.to_dict()
            job.state = "cancelled" if job.summary.get("cancelled") else "finished"
        except DeejaiError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # keep the daemon alive; the log has the traceback
            log.exception("scan %s failed", job.job)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            if library is not None:
                library.close()
            job.finished_at = time.time()
            self._emit(
                "scan.finished",
                {"job": job.job, "state": job.state, "summary": job.summary, "error": job.error},
            )

    def _job(self, job: str | None) -> ScanJob | None:
        with self._jobs_lock:
            if job is not None:
                return self._jobs.get(job)
            if not self._jobs:
                return None
            return max(self._jobs.values(), key=lambda j: j.started_at)

    @exposed("library.scan_status", notes={"job": "latest"},
             result="the job: `{job, roots, state, done, total, errors, rate, eta_s, "
             "started_at, finished_at, summary, error}`, or `{\"job\": null, \"state\": \"idle\"}`")
    def scan_status(self, job: str | None = None) -> dict[str, Any]:
        """State of scan ``job`` (default: the latest); ``{"state": "idle"}`` when none ran."""
        found = self._job(job)
        if found is None:
            if job is not None:
                raise DeejaiError(f"no scan job {job!r}")
            return {"job": None, "state": "idle"}
        return found.to_dict()

    @exposed("library.cancel_scan", notes={"job": "the running one"},
             result='`{"job", "cancelled": bool}`')
    def cancel_scan(self, job: str | None = None) -> dict[str, Any]:
        """Ask scan ``job`` (default: the running one) to stop; what finished is committed."""
        found = self._job(job)
        if found is None or found.state != "running":
            return {"job": found.job if found else None, "cancelled": False}
        found.cancel.set()
        return {"job": found.job, "cancelled": True}

    def wait_scan(self, job: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until scan ``job`` ends (in-process only); returns :meth:`scan_status`."""
        found = self._job(job)
        if found is not None and found.thread is not None:
            found.thread.join(timeout)
        return self.scan_status(job)

    # ------------------------------------------------------------------ tracks
    @exposed("library.tracks", notes={"limit": "null: all", "query": "≤ 1000 words"},
             result="list of track records", heavy=True)
    def tracks(
        self, query: QueryText | None = None, limit: Count | None = 50, errors: bool = False
    ) -> list[dict[str, Any]]:
        """Tracks whose artist, title, album or path match ``query`` (all when None).

        ``errors=True`` lists the files that failed to scan, with their error text.

        Raises
        ------
        InvalidParamsError
            ``limit`` is negative or beyond 2**63-1, or ``query`` is longer than 100,000
            characters or 1,000 words.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 0 <= limit <= MAX_INT64):
            raise InvalidParamsError(f"limit must be a whole number from 0 to {MAX_INT64}, "
                                     f"not {limit!r}", "limit")
        if query is not None:
            check_query(query, "query")
        status = "error" if errors else "ok"
        return self._library().tracks(query=query or None, limit=limit, status=status)

    @exposed("library.resolve", result="the track record the spec names", heavy=True)
    def resolve(self, track: str | int) -> dict[str, Any]:
        """The track a path, id or query names.

        Raises
        ------
        TrackNotFoundError, AmbiguousTrackError
        """
        return self.track(track)

    @exposed("library.track", notes={"track": "path, id or query"}, result="one track record",
             heavy=True)
    def track(self, track: str | int) -> dict[str, Any]:
        """The full record of one track (path, tags, duration_s, status...)."""
        track_id = self._resolve_id(track)
        rec = self._library().track(track_id)
        if rec is None:  # pragma: no cover - resolve only returns known ids
            from deejai.engine.errors import TrackNotFoundError

            raise TrackNotFoundError(f"no track with id {track_id}")
        return rec

    # ------------------------------------------------------------------ playlists
    @exposed("playlist.join", result="a playlist", heavy=True,
             notes={"waypoints": '≥ 2 paths, ids, queries or `"tag:<label>"`'})
    def join(
        self,
        waypoints: Sequence[str | int],
        n: int = 8,
        noise: float = 0.0,
        seed: int | None = None,
        no_repeat_artist: bool = False,
        max_duration_s: float | None = None,
        transitions: bool = False,
    ) -> dict[str, Any]:
        """Join the dots: a playlist through two or more waypoints.

        Parameters
        ----------
        waypoints : list of str or int
            Track paths, ids or queries, or ``"tag:<label>"`` for the point of the library
            most associated with one of the model's tags.
        n : int
            Tracks between each pair of consecutive waypoints.
        noise : float
            0 gives the best path; larger values give a different good path each call.
        seed : int, optional
            Makes a noisy path reproducible.
        no_repeat_artist : bool
            Never the same artist twice in a row.
        max_duration_s : float, optional
            Leave out tracks longer than this many seconds.
        transitions : bool
            Compare the end of each track with the start of the next.

        Returns
        -------
        dict
            :meth:`deejai.engine.catalogue.Playlist.to_dict`.
        """
        from deejai.engine import playlist as pl
        from deejai.engine.catalogue import Playlist

        if len(waypoints) < 2:
            raise PlaylistError("join needs at least two waypoints (--from and --to)")
        if int(n) < 0:
            raise PlaylistError("n must be 0 or more")
        seed = self._check_seed(seed)
        catalogue, index = self._catalogue_and_index()
        # tracks first, then each tag: the track nearest to the tag's point that is not
        # already a waypoint (pl.tag_track), the same whatever n or noise
        is_tag = [isinstance(spec, str) and spec.startswith("tag:") for spec in waypoints]
        points: list[Any] = [None if tag else self._resolve_id(spec)
                             for spec, tag in zip(waypoints, is_tag)]
        for i, spec in enumerate(waypoints):
            if is_tag[i]:
                points[i] = pl.tag_track(catalogue, spec[4:], max_duration_s=max_duration_s,
                                         exclude=[p for p in points if p is not None])
        ids = pl.join(
            catalogue,
            index,
            points,
            int(n),
            noise=float(noise),
            seed=seed,
            constraints=self._constraints(no_repeat_artist, max_duration_s),
            transitions=bool(transitions),
        )
        dists = pl.step_distances(catalogue, ids, transitions=bool(transitions))
        params = {"waypoints": list(waypoints), "n": int(n), "noise": float(noise), "seed": seed,
                  "no_repeat_artist": bool(no_repeat_artist), "max_duration_s": max_duration_s,
                  "transitions": bool(transitions)}
        return self._remember(Playlist(self._entries(ids, dists), kind="join",
                                       params=params).to_dict())

    @exposed("playlist.radio", notes={"seeds": "≥ 1"}, result="a playlist", heavy=True)
    def radio(
        self,
        seeds: Sequence[str | int],
        n: int = 20,
        lookback: int = 3,
        noise: float = 0.0,
        seed: int | None = None,
        no_repeat_artist: bool = False,
        max_duration_s: float | None = None,
    ) -> dict[str, Any]:
        """Radio: keep going from one or more seed tracks (Deej-A.I.'s "make playlist").

        Parameters
        ----------
        seeds : list of str or int
            Track paths, ids or queries; they open the playlist.
        n : int
            Length of the playlist, seeds included.
        lookback : int
            How many of the last tracks the next one should sound like.
        noise, seed, no_repeat_artist, max_duration_s
            As for :meth:`join`.
        """
        from deejai.engine import playlist as pl
        from deejai.engine.catalogue import Playlist

        if not seeds:
            raise PlaylistError("radio needs at least one seed track")
        if int(n) < 1:
            raise PlaylistError("n must be 1 or more")
        seed = self._check_seed(seed)
        catalogue, index = self._catalogue_and_index()
        seed_ids = [self._resolve_id(s) for s in seeds]
        ids = pl.radio(
            catalogue,
            index,
            seed_ids,
            int(n),
            lookback=int(lookback),
            noise=float(noise),
            seed=seed,
            constraints=self._constraints(no_repeat_artist, max_duration_s),
        )
        dists = pl.step_distances(catalogue, ids)
        params = {"seeds": list(seeds), "n": int(n), "lookback": int(lookback),
                  "noise": float(noise), "seed": seed, "no_repeat_artist": bool(no_repeat_artist),
                  "max_duration_s": max_duration_s}
        return self._remember(Playlist(self._entries(ids, dists), kind="radio",
                                       params=params).to_dict())

    @exposed("playlist.export", result='`{"format", "path"}` when written, '
             '`{"format", "content"}` otherwise', heavy=True)
    def export(
        self, playlist: dict[str, Any], format: str | None = None, path: str | None = None
    ) -> dict[str, Any]:
        """Render a playlist with an exporter plugin, to a file or as text.

        Parameters
        ----------
        playlist : dict
            A playlist as :meth:`join` or :meth:`radio` return it.
        format : str, optional
            Exporter name (``m3u8``, ``xspf``, ``json``, or a plugin's); default: from the
            extension of ``path``, else ``m3u8``.
        path : str, optional
            Write the file there atomically; when None the content is returned. A relative
            path lands in the playlist folder (the ``playlist_dir`` setting; default
            ``<data dir>/playlists``), never in the engine's working folder. The engine
            writes only into that folder or one of the ``export_dirs`` setting (symbolic
            links resolved): a client of the daemon cannot write the user's other files.
            Front ends that save where the user says (the command line, the apps) render
            with ``path=None`` or write through their own exporters.

        Returns
        -------
        dict
            ``{"format", "path"}`` when written, ``{"format", "content"}`` otherwise.

        Raises
        ------
        ConfigError
            An unknown format, or a path outside the folders the settings allow.
        """
        from deejai.engine.export import as_playlist

        pl = as_playlist(playlist)
        if path is not None:
            target = self._export_target(path)
            written, name = self.exporters.write(pl, target, format=format)
            return {"format": name, "path": str(written)}
        name = format or "m3u8"
        content = self.exporters.render(pl, name)
        return {"format": self.exporters.get(name).name, "content": content.decode("utf-8")}

    def _export_target(self, path: str) -> str:
        """The absolute file :meth:`export` may write for ``path`` (see there).

        Raises
        ------
        ConfigError
            When ``path`` is empty or its folder lies outside the playlist folder and the
            ``export_dirs`` setting.
        """
        base = self.settings.get("playlist_dir") or str(self.paths.playlist_dir)
        allowed = [str(base), *(str(d) for d in self.settings.get("export_dirs") or [])]
        text = os.path.expanduser(str(path))
        if not text.strip() or text.endswith(("/", os.sep)):
            raise ConfigError(f"{str(path)!r} is not a playlist file name")
        target = os.path.normpath(text if os.path.isabs(text) else os.path.join(base, text))
        folder = os.path.realpath(os.path.dirname(target))
        for root in allowed:
            real_root = os.path.realpath(root)
            if folder == real_root or folder.startswith(real_root.rstrip(os.sep) + os.sep):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                return target
        raise ConfigError(
            f"{target}: the engine writes playlists only into {base} and the folders of the "
            "export_dirs setting; give a file name there, or render the playlist "
            "(path null) and save it yourself")

    @exposed("playlist.formats", result='`[{"name", "extension", "media_type"}, ...]`')
    def formats(self) -> list[dict[str, str]]:
        """The playlist formats :meth:`export` writes, for front ends' save dialogs."""
        return self.exporters.describe()

    def send(self, playlist: dict[str, Any], sink: str, **options: Any) -> dict[str, Any]:
        """Send ``playlist`` to the sink ``sink`` (MPD...) with its settings section.

        Raises
        ------
        PluginError
            No such sink, or the sink failed unexpectedly.
        DeejaiError
            What the sink raises (``SinkError`` when it cannot be reached).
        """
        from deejai.engine.errors import PluginError
        from deejai.engine.export import send_playlist

        target = self.sinks.get(sink)
        if target is None:
            known = ", ".join(sorted(self.sinks)) or "none"
            raise PluginError(f"no plugin provides the sink {sink!r}; known sinks: {known}")
        section = self.settings.get(sink) if isinstance(self.settings, Mapping) else None
        return send_playlist(target, sink, playlist, section, **options)

    # ------------------------------------------------------------------ status
    @exposed("engine.status", result="library statistics, index state, model, current scan")
    def status(self) -> dict[str, Any]:
        """Library statistics, index state, the model and the current scan."""
        lib = self._library()
        stats = dict(lib.stats())
        cached = self._cache  # one atomic read: never wait for a playlist building the index
        if cached is not None:
            idx = cached[2]
            stats["index"] = {
                "kind": getattr(idx, "kind", type(idx).__name__),
                "ntotal": int(getattr(idx, "ntotal", 0)),
                "revision": cached[0],
                "fresh": cached[0] == lib.revision,
            }
        else:
            from deejai.engine.index import sidecar_info

            info = sidecar_info(lib, lib.serving_model(self.model_name)) or {}
            stats["index"] = {
                "kind": info.get("kind"),
                "ntotal": int(info.get("ntotal") or 0),
                "revision": info.get("revision"),
                "fresh": bool(info.get("fresh")),
            }
            if info.get("damaged"):
                # a cache: the next playlist or scan rebuilds it from the library
                stats["index"]["damaged"] = str(info["damaged"])
        stats["model"] = self.model_name
        coverage = lib.model_coverage()
        serving = lib.serving_model(self.model_name)
        stats["serving_model"] = serving
        stats["model_coverage"] = coverage
        done = coverage.get(self.model_name, 0)
        if done < stats.get("tracks", 0):
            # tracks still to be (re-)analysed with the configured model: the next scan does it
            stats["migration"] = {"model": self.model_name, "done": done,
                                  "total": int(stats.get("tracks", 0)), "serving": serving}
        stats["library_file"] = str(self.paths.library_file)
        stats["scan"] = self.scan_status()
        return stats

    # ------------------------------------------------------------------ map
    @property
    def last_playlist_file(self) -> Path:
        """``<state dir>/last-playlist.json``: the newest playlist this engine made."""
        return self.paths.state_dir / LAST_PLAYLIST_NAME

    def _remember(self, playlist: dict[str, Any]) -> dict[str, Any]:
        """Keep ``playlist`` as the last one made (what ``deejai map`` draws); returns it."""
        import json

        target = self.last_playlist_file
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(playlist), encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:  # a read-only state folder costs only this
            log.debug("cannot keep the last playlist in %s: %s", target, exc)
        return playlist

    @exposed("library.map", notes={"method": '"auto", "tsne" or "pca"'}, heavy=True,
             result='`{"revision", "model", "method", "count", "ids", "x", "y", "artist", '
             '"title", "album", "tag"}`: one entry per track in each list')
    def map(self, method: str = "auto") -> dict[str, Any]:
        """The library map: a 2-D point per track (:mod:`deejai.engine.projection`).

        Computed once per library revision (t-SNE where openTSNE is installed, else PCA) and
        cached beside the database.

        Parameters
        ----------
        method : {"auto", "tsne", "pca"}

        Returns
        -------
        dict
            ``{"revision", "model", "method", "count", "ids", "x", "y", "artist", "title",
            "album", "tag"}``: the lists are aligned, one entry per track; ``x`` and ``y`` in
            ``[-1, 1]``; ``tag`` is the track's most probable tag ("" without tags).

        Raises
        ------
        LibraryEmptyError
            Nothing is scanned yet.
        PlaylistError
            An unknown ``method``.
        """
        import numpy as np

        from deejai.engine.projection import METHODS, library_map

        if method not in METHODS:
            raise PlaylistError(f"unknown map method {method!r}; known: {', '.join(METHODS)}")
        catalogue, _ = self._catalogue_and_index()
        lib = self._library()
        with self._cache_lock:
            cached = getattr(self, "_map_cache", None)
            if cached is not None and cached[0] == (lib.revision, method):
                return cached[1]
        found = library_map(lib, self.model_name, catalogue, method=method)
        records = {int(r["id"]): r for r in self._records()}
        tags = [""] * len(catalogue)
        if catalogue.tag_probs is not None and len(catalogue.tag_labels):
            labels = [str(x) for x in catalogue.tag_labels]
            tags = [labels[int(j)] for j in np.argmax(catalogue.tag_probs, axis=1)]
        ids = [int(i) for i in found.ids]
        rec = [records.get(i, {}) for i in ids]
        result = {
            "revision": found.revision,
            "model": found.model,
            "method": found.method,
            "count": len(ids),
            "ids": ids,
            "x": [round(float(v), 5) for v in found.xy[:, 0]],
            "y": [round(float(v), 5) for v in found.xy[:, 1]],
            "artist": [str(r.get("artist") or "") for r in rec],
            "title": [str(r.get("title") or "") or os.path.splitext(
                os.path.basename(str(r.get("path") or "")))[0] for r in rec],
            "album": [str(r.get("album") or "") for r in rec],
            "tag": tags,
        }
        with self._cache_lock:
            self._map_cache = ((lib.revision, method), result)
        return result

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Cancel a running scan (its finished work is committed) and close the library."""
        if self._closed:
            return
        self._closed = True
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.state == "running":
                job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join()
        with self._lib_lock:
            libraries, self._libraries = self._libraries, []
        for lib in libraries:
            try:
                lib.close()
            except Exception:  # pragma: no cover - closing from another thread
                log.debug("closing a library connection failed", exc_info=True)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: Wire name -> :class:`~deejai.engine.methods.Method`: the Engine's part of the contract
#: (``docs/protocol.md``); the daemon's built-in methods are in :mod:`deejai.engine.rpc.dispatch`.
ENGINE_METHODS: dict[str, Method] = method_table(Engine)
