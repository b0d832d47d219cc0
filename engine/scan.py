"""Scanning: walk the music folders, compare with the library, analyse what changed.

A scan runs in four stages (beets' importer is a staged pipeline in the same spirit):

1. **Walk** the roots (:func:`walk`): audio files by extension (case-insensitive, ``.mp3``
   first), skipping hidden files and folders and following each real folder once, so symlink
   loops end.
2. **Diff** against the library (:func:`plan`): a path whose size and ``mtime_ns`` did not
   change is *unchanged* and its file is never opened; a new path whose audio hash equals a
   track that vanished (now, or in an earlier scan) is a *move* (the track keeps its id and
   vectors); other new paths are *added*, changed ones *updated*; vanished tracks under the
   roots are *removed* — only when they are known to be gone (see below). Files that failed
   with a decode or format error are retried only when they changed, or with
   ``retry_errors=True``; files that failed for another reason (a *transient* error: their
   worker died twice, the file could not be read) are retried by every scan.
3. **Analyse** the work list in an executor — by default a :class:`~deejai.engine.pool.WorkerPool`
   whose workers each load the model once — with a bounded number of tasks in flight, so a
   cancel is quick and memory stays flat. A file whose worker died (``kill -9``, the OOM
   killer, a segfault in a decoder) is tried once more, in a worker started for it
   (:meth:`~deejai.engine.pool.WorkerPool.submit_fresh`); a second death records a transient
   error.
4. **Commit** results from the main process only (the single writer), in batches of
   ``batch_size`` results or every ``batch_seconds``, each batch one SQLite transaction; a
   killed scan loses at most one batch and the next scan picks up where it stopped. Duplicates
   (equal audio hash at two live paths) are marked at the end and the vector index sidecar is
   brought up to date.

One scan per library at a time: an exclusive, non-blocking ``flock`` on ``<db>.scan.lock``
beside the database. The kernel releases it when the process dies, so a killed scan never
leaves a stale lock behind.

When is a track *gone*? Only when the walk read the folder it was in and the file is not
there, or read the nearest folder above it that exists and that folder is not empty (the
track's album folder was deleted). A track is *kept* when a folder on its way could not be
read (permission denied, an I/O error, a dangling symbolic link), when the nearest existing
folder is empty (an unmounted mount point), or when its root is missing or holds no audio file
at all (an unmounted drive); the summary says so in ``kept_why``. ``prune=True`` (``deejai
scan --prune``) removes every track under the roots the walk did not find. A removed track
stays in the library as *gone*, with its vectors: when its audio comes back (the same path,
or a new path with the same audio hash), it gets its id and vectors back without analysis.

Executors
---------
The analysis runs in any :class:`concurrent.futures.Executor`. Tasks are
``analyse_file(path, model, patches)`` calls returning a
:class:`~deejai.engine.analyse.TrackAnalysis`. A task's exception becomes the file's error
row: :class:`~deejai.engine.errors.WorkerDiedError` (a worker died) is first retried, up to
``retries`` times, through the executor's ``submit_fresh`` when it has one (else ``submit``),
then recorded as transient; see :func:`error_kind` for the rest. An executor for a cluster
raises ``WorkerDiedError`` for a task whose worker was lost to get the same treatment; one
whose ``retries_dead_workers`` is true (:class:`~deejai.engine.cluster.ClusterExecutor`: Dask's
scheduler already ran the task on other workers, ``allowed-failures`` times) has its
``WorkerDiedError`` recorded as transient at once. An executor may also analyse a file its own
way: ``submit_analysis(file, model, patches)``, where it has that method, replaces the
``analyse_file`` task.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from deejai.engine._fs import PRIVATE_FILE_MODE, lock_exclusive, tighten
from deejai.engine.errors import (
    AudioError,
    DeejaiError,
    ScanRunningError,
    TaskTimeoutError,
    WorkerDiedError,
)
from deejai.engine.pool import WorkerPool, default_workers, worker_state

__all__ = [
    "scan",
    "walk",
    "plan",
    "error_kind",
    "ScanSummary",
    "ScanPlan",
    "WalkReport",
    "FoundFile",
    "AUDIO_EXTENSIONS",
    "scan_lock",
    "init_worker",
    "analyse_file",
]

log = logging.getLogger(__name__)

#: File extensions a scan picks up, in priority order (lower case; matched case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".mp3", ".flac", ".ogg", ".oga", ".wav", ".m4a")

#: Seconds one file may take in a worker before the worker is killed and the file recorded as
#: failed (a decoder stuck on a damaged file). Analysing an hour-long MP3 takes well under a
#: minute on one core.
TASK_TIMEOUT_S = 300.0

#: Times a file whose worker died is tried again, each time in a fresh worker, before it is
#: recorded as a transient error (which the next scan retries).
RETRIES = 1

ProgressCallback = Callable[[int, int, int, float, "float | None"], None]


# ------------------------------------------------------------------------------------ results


@dataclass
class ScanSummary:
    """What a scan did.

    Attributes
    ----------
    added, updated, moved, removed, unchanged : int
        Tracks analysed for the first time, analysed again because the file changed (or an
        earlier error was retried), given a new path without analysis, deleted from the
        library, and skipped without opening the file.
    errors : int
        Files that failed in this scan (their rows have ``status = 'error'``).
    duplicates : int
        Ok tracks in the library whose audio equals an older track's (after this scan).
    elapsed_s : float
        Wall-clock seconds.
    cancelled : bool
        The scan was stopped early; what finished was committed.
    files : int
        Audio files found under the roots.
    reanalysed : int
        Of ``updated``, unchanged tracks analysed again because they had no vector for the
        scan's model (the first scan after the default model changed).
    model : str
        The model the scan analysed with.
    skipped : list of str
        Folders or names the walk could not read (one line each, with the reason).
    restored : int
        Of ``moved``, tracks removed by an earlier scan whose audio came back: they got
        their old id and vectors back without analysis.
    kept : int
        Tracks the walk did not find but which are not known to be gone (their folder could
        not be read, is empty, or their root is missing), so they stay in the library.
    kept_why : list of str
        One line per folder or root whose tracks were kept, saying why and what to do.
    retried : int
        Files tried again in a fresh worker because their worker died.
    """

    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    cancelled: bool = False
    files: int = 0
    skipped: list[str] = field(default_factory=list)
    reanalysed: int = 0
    model: str = ""
    restored: int = 0
    kept: int = 0
    kept_why: list[str] = field(default_factory=list)
    retried: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        d = asdict(self)
        d["elapsed_s"] = round(float(self.elapsed_s), 3)
        return d


@dataclass(frozen=True)
class FoundFile:
    """An audio file the walk found: absolute path (symlinks not resolved), size, mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanPlan:
    """The diff of a walk against the library (see :func:`plan`)."""

    new: list[FoundFile] = field(default_factory=list)
    changed: list[FoundFile] = field(default_factory=list)
    moves: list[tuple[int, FoundFile]] = field(default_factory=list)  # (track id, new file)
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0
    #: Of ``moves``, the ids of tracks removed by an earlier scan that come back.
    restored: set[int] = field(default_factory=set)
    #: Tracks not found but kept (not known to be gone), and why, one line per folder.
    kept: int = 0
    kept_why: list[str] = field(default_factory=list)
    #: Unchanged files of ok tracks that have no vector for the scan's model (a library
    #: scanned with another model): analysed again, after the new and changed files.
    reanalyse: list[FoundFile] = field(default_factory=list)

    @property
    def work(self) -> list[FoundFile]:
        """Files to analyse: new ones first, then changed ones, then re-analyses."""
        return self.new + self.changed + self.reanalyse


# ------------------------------------------------------------------------------------ walking


def _ext_rank(name: str) -> int:
    ext = os.path.splitext(name)[1].lower()
    try:
        return AUDIO_EXTENSIONS.index(ext)
    except ValueError:
        return -1


def _storable(path: str) -> bool:
    """False for names with bytes that are not valid in the file system encoding."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@dataclass
class WalkReport:
    """What a walk saw besides the files: which folders it read, and what it could not read.

    Attributes
    ----------
    skipped : list of str
        One line per folder or name that could not be read, with the reason.
    listed : dict of str to int
        Every folder whose listing was read -> how many visible (not hidden) entries it has.
    unreadable : dict of str to str
        Folders, roots and names that could not be read (or are dangling symbolic links) ->
        the reason. What lies under them is unknown, not gone.
    found : dict of str to int
        Each root (absolute) -> audio files found under it.
    """

    skipped: list[str] = field(default_factory=list)
    listed: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)


def walk(roots: Sequence[str | os.PathLike], skipped: list[str] | None = None, *,
         report: WalkReport | None = None) -> list[FoundFile]:
    """Find the audio files under ``roots``.

    Parameters
    ----------
    roots : sequence of path
        Folders (walked recursively) or single audio files.
    skipped : list, optional
        Receives one line per folder or name that could not be read.
    report : WalkReport, optional
        Receives the folders read and what could not be read (:func:`plan` uses it to tell
        a file that is gone from one that could not be seen).

    Returns
    -------
    list of FoundFile
        Sorted by extension priority (:data:`AUDIO_EXTENSIONS`: ``.mp3`` first) then path.
        Hidden files and folders (a name starting with ``.``) are left out, every real folder is
        visited once (its ``(st_dev, st_ino)``), so symlink loops end; a file reached twice by
        the same path is listed once.
    """
    rep = report if report is not None else WalkReport()
    if skipped is None:
        skipped = rep.skipped
    found: dict[str, FoundFile] = {}
    seen_dirs: set[tuple[int, int]] = set()

    def cannot_read(path: str, why: str) -> None:
        skipped.append(f"{path}: {why}")
        if skipped is not rep.skipped:
            rep.skipped.append(f"{path}: {why}")
        rep.unreadable[path] = why

    def add_file(path: str, st: os.stat_result) -> bool:
        if not _storable(path):
            skipped.append(f"{path!r}: the name is not valid UTF-8")
            return False
        found.setdefault(path, FoundFile(path, int(st.st_size), int(st.st_mtime_ns)))
        return True

    for root in roots:
        top = os.path.abspath(os.path.expanduser(os.fspath(root)))
        before = len(found)
        try:
            st = os.stat(top)
        except OSError as exc:
            cannot_read(top, exc.strerror or str(exc))
            rep.found[top] = 0
            continue
        if stat.S_ISREG(st.st_mode):
            if _ext_rank(top) >= 0:
                add_file(top, st)
            rep.found[top] = len(found) - before
            continue
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                fst = os.stat(folder)
            except OSError as exc:
                cannot_read(folder, exc.strerror or str(exc))
                continue
            key = (fst.st_dev, fst.st_ino)
            if key in seen_dirs:
                rep.listed.setdefault(folder, 1)  # read by another path: known, not empty
                continue
            seen_dirs.add(key)
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError as exc:
                cannot_read(folder, exc.strerror or str(exc))
                continue
            visible = [e for e in entries if not e.name.startswith(".")]
            rep.listed[folder] = len(visible)
            for entry in visible:
                try:
                    if entry.is_dir():  # follows symlinks; loops end at seen_dirs
                        stack.append(entry.path)
                    elif entry.is_file():
                        if _ext_rank(entry.name) >= 0:
                            add_file(entry.path, entry.stat())
                    elif entry.is_symlink():
                        # a link to a folder on an unmounted drive, or a file that is gone:
                        # what it pointed at is unknown, not gone
                        if not os.path.exists(entry.path):
                            cannot_read(entry.path, "broken symbolic link")
                except OSError as exc:  # a name that cannot be stat'ed, a file removed meanwhile
                    cannot_read(entry.path, exc.strerror or str(exc))
        rep.found[top] = sum(1 for p in found if p == top or p.startswith(top.rstrip(os.sep) + os.sep))
    return sorted(found.values(), key=lambda f: (_ext_rank(f.path), f.path))


def _why_kept(path: str, root: str, rep: WalkReport) -> tuple[str, str] | None:
    """None when the track at ``path`` (under ``root``) is known to be gone; else
    ``(folder, reason)``: the folder or root whose state hides it."""
    if root in rep.unreadable:
        return root, "missing" if not os.path.lexists(root) else "unreadable"
    if rep.found.get(root, 0) == 0:
        return root, "no audio"
    if path in rep.unreadable:
        return path, "unreadable"
    chain = [root]
    rel = os.path.relpath(os.path.dirname(path), root)
    if rel != ".":
        for part in rel.split(os.sep):
            chain.append(os.path.join(chain[-1], part))
    parent: str | None = None
    for folder in chain:
        if folder in rep.unreadable:
            return folder, "unreadable"
        if folder not in rep.listed:
            # not in its parent's listing: deleted (or hidden, or never a folder)
            if parent is not None and rep.listed[parent] == 0:
                return parent, "empty"
            return None
        parent = folder
    if parent is not None and rep.listed[parent] == 0:
        return parent, "empty"
    return None  # its folder was read and the file is not in it


def _kept_line(folder: str, reason: str, n: int, why: str | None = None) -> str:
    tracks = f"{n} track{'s' if n != 1 else ''}"
    if reason == "missing":
        return (f"{folder}: not found; its {tracks} are kept (an unmounted drive?); "
                "`deejai scan --prune` removes them")
    if reason == "no audio":
        return (f"{folder}: no audio files found; its {tracks} are kept (an unmounted drive?); "
                "`deejai scan --prune` removes them")
    if reason == "empty":
        return (f"{folder}: the folder is empty; its {tracks} are kept (an unmounted drive?); "
                "`deejai scan --prune` removes them")
    because = f" ({why})" if why else ""
    return f"{folder}: could not be read{because}; its {tracks} are kept until it can be read"


def file_audio_hash(path: str) -> str:
    """Audio hash of a file, as :func:`deejai.engine.analyse.analyse` computes it (cheap: no
    decoding; used to recognise moved files)."""
    from deejai.engine import analyse

    return analyse.audio_hash(path)


def plan(
    library: Any,
    files: Sequence[FoundFile],
    roots: Sequence[str],
    *,
    model: str,
    retry_errors: bool = False,
    hasher: Callable[[str], str] = file_audio_hash,
    report: WalkReport | None = None,
    prune: bool = False,
) -> ScanPlan:
    """Compare the walk with the library.

    Parameters
    ----------
    library : Library
    files : sequence of FoundFile
        The walk's result.
    roots : sequence of str
        Absolute roots; only tracks under them can be *removed*.
    model : str
        A track without a vector for this model is analysed again.
    retry_errors : bool
        Analyse files that failed before even when they did not change (files with a
        transient error are analysed again anyway).
    hasher : callable
        ``path -> audio hash``; called only for new files while tracks have vanished (in
        this walk, or removed by an earlier scan).
    report : WalkReport, optional
        The walk's report: a track the walk did not find is removed only when it is known to
        be gone (module docstring). None: every track under the roots that the walk did not
        find is gone (as with ``prune``).
    prune : bool
        Remove every track under the roots that the walk did not find, even where its folder
        could not be read or its root is missing or empty.

    Returns
    -------
    ScanPlan
    """
    state = library.scan_state(model)
    out = ScanPlan()
    seen: set[str] = set()
    new: list[FoundFile] = []
    for f in files:
        seen.add(f.path)
        row = state.get(f.path)
        if row is None:
            new.append(f)
            continue
        same = row["size"] == f.size and row["mtime_ns"] == f.mtime_ns
        if row["status"] == "gone":
            # removed by an earlier scan, back at the same path
            if same and row["has_vector"]:
                out.moves.append((int(row["id"]), f))
                out.restored.add(int(row["id"]))
            else:
                out.changed.append(f)  # analysed again under its old id
        elif row["status"] == "error":
            transient = row.get("error_kind") == "transient"
            if same and not retry_errors and not transient:
                out.unchanged += 1
            else:
                out.changed.append(f)
        elif same and row["has_vector"]:
            out.unchanged += 1
        elif same:
            out.reanalyse.append(f)
        else:
            out.changed.append(f)
    abs_roots = [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots]
    vanished: dict[str, dict[str, Any]] = {}
    kept: dict[tuple[str, str], int] = {}
    for path, row in state.items():
        if path in seen or row["status"] == "gone":
            continue
        root = _root_of(path, abs_roots)
        if root is None:
            continue
        why = None if (prune or report is None) else _why_kept(path, root, report)
        if why is None:
            vanished[path] = row
        else:
            kept[why] = kept.get(why, 0) + 1
    out.kept = sum(kept.values())
    out.kept_why = [_kept_line(folder, reason, n, report.unreadable.get(folder) if report else None)
                    for (folder, reason), n in sorted(kept.items())]
    by_hash: dict[str, list[int]] = {}
    has_vector: dict[int, bool] = {}
    for row in vanished.values():
        if row["status"] == "ok" and row["audio_hash"]:
            by_hash.setdefault(row["audio_hash"], []).append(int(row["id"]))
            has_vector[int(row["id"])] = bool(row["has_vector"])
    gone_ids: set[int] = set()
    for path, row in sorted(state.items(), key=lambda kv: -int(kv[1]["id"])):
        # removed by an earlier scan (the latest tracks first), not back at their own path:
        # their audio may come back elsewhere
        if row["status"] == "gone" and path not in seen and row["audio_hash"]:
            by_hash.setdefault(row["audio_hash"], []).append(int(row["id"]))
            has_vector[int(row["id"])] = bool(row["has_vector"])
            gone_ids.add(int(row["id"]))
    moved_ids: set[int] = set()
    for f in new:
        if by_hash:
            try:
                h = hasher(f.path)
            except (DeejaiError, OSError) as exc:
                log.debug("cannot hash %s: %s", f.path, exc)
                h = None
            ids = by_hash.get(h) if h else None
            if ids:
                tid = ids.pop(0)
                if not ids:
                    del by_hash[h]
                moved_ids.add(tid)
                out.moves.append((tid, f))
                if tid in gone_ids:
                    out.restored.add(tid)
                if not has_vector.get(tid, True):
                    out.reanalyse.append(f)  # back, but without a vector for this model
                continue
        out.new.append(f)
    out.removed = sorted(int(r["id"]) for r in vanished.values() if int(r["id"]) not in moved_ids)
    return out


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    """The longest root ``path`` lies under (or is), or None."""
    best: str | None = None
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            if best is None or len(root) > len(best):
                best = root
    return best


# ------------------------------------------------------------------------------------ locking


def lock_path(library: Any) -> Path:
    """The scan lock file of ``library``: ``<db file>.scan.lock``."""
    p = Path(library.path)
    return p.with_name(p.name + ".scan.lock")


@contextmanager
def scan_lock(library: Any) -> Iterator[Path]:
    """Hold the library's exclusive scan lock for the ``with`` block.

    Raises
    ------
    ScanRunningError
        When another scan (in this or another process) holds it.
    """
    path = lock_path(library)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    tighten(path, PRIVATE_FILE_MODE)
    try:
        try:
            lock_exclusive(fd)
        except OSError:
            raise ScanRunningError("a scan is already running on this library") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ------------------------------------------------------------------------------------ workers

_thread_models = threading.local()


#: Environment variables that cap the thread pools of BLAS and OpenMP libraries. Two workers
#: on two cores each running a 2-thread OpenBLAS oversubscribe the machine; capping every
#: worker at one thread measured 1.7-1.9x faster scans (issue 11).
_ONE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

#: Patches per ``invoke`` in a worker. Batch 1 ran msd-musicnn-v2 as fast as batch 8 or 32
#: (``benchmarks/models.py``: within the noise, batch 1 often first), and the interpreter's
#: arena grows with the batch: 16 patches at once cost a worker ~100 MB more (the timbral
#: convolution's output alone is 16 x 187 x 59 x 204 values), which a phone does not have.
WORKER_BATCH = 1


def limit_threads() -> None:
    """Cap BLAS/OpenMP at one thread in this process (a worker runs one task at a time; the
    parallelism is the pool's). The variables act on libraries not loaded yet; threadpoolctl
    caps those already loaded."""
    for name in _ONE_THREAD_ENV:
        os.environ.setdefault(name, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except Exception:  # noqa: BLE001 - threadpoolctl is optional on phones
        pass


def init_worker(model_name: str, threads: int = 1, variant: str | None = None) -> None:
    """Pool initializer: cap threads, load ``model_name`` once and warm it up in this worker,
    so the first file pays no start-up cost (imports, interpreter, first invoke)."""
    limit_threads()
    from deejai.engine.model import Model

    if os.environ.get("DEEJAI_DEBUG", "") in ("", "0"):
        # decoders print notes on damaged frames straight to fd 2, which would garble the
        # parent's progress bar; task errors come back through the pool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    state = worker_state()
    model = Model(model_name, threads=threads, batch_size=WORKER_BATCH, variant=variant)
    model.warm_up()
    state["model"] = model
    state["model_name"] = model_name
    state["thread"] = threading.get_ident()


def _model(model_name: str) -> Any:
    state = worker_state()
    if state.get("model_name") == model_name and state.get("thread") == threading.get_ident():
        return state["model"]
    # another executor (threads, Dask, Ray): one interpreter per thread, loaded on first use
    cached = getattr(_thread_models, "models", None)
    if cached is None:
        cached = _thread_models.models = {}
    if model_name not in cached:
        from deejai.engine.model import Model

        cached[model_name] = Model(model_name, threads=1, batch_size=WORKER_BATCH)
    return cached[model_name]


def analyse_file(path: str, model_name: str, patches: int | None = None) -> Any:
    """Task run in a worker: :func:`deejai.engine.analyse.analyse` with the worker's model.

    ``patches`` is the ``k`` of :func:`~deejai.engine.analyse.analyse` (None: its default).
    """
    from deejai.engine.analyse import analyse

    return analyse(path, _model(model_name), k=patches)


# ------------------------------------------------------------------------------------ scanning


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, AudioError):
        return exc.reason
    if isinstance(exc, DeejaiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def error_kind(exc: BaseException) -> str:
    """How a file's failure is recorded: ``"permanent"`` or ``"transient"``.

    Permanent errors are the file's own: it cannot be decoded or has no audio
    (:class:`~deejai.engine.errors.AudioError`), or a decoder ran past the time limit on it
    (:class:`~deejai.engine.errors.TaskTimeoutError`); the file is analysed again when it
    changes, or with ``retry_errors``. Everything else is transient — the worker died (after
    its retries), the file could not be read (an ``OSError``: permissions, a drive that went
    away), an unexpected exception — and the next scan tries the file again.
    """
    if isinstance(exc, (AudioError, TaskTimeoutError)):
        return "permanent"
    return "transient"


def scan(
    library: Any,
    roots: Sequence[str | os.PathLike],
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    retry_errors: bool = False,
    model: str | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_seconds: float = 2.0,
    batch_size: int = 32,
    update_index: bool = True,
    on_result: Callable[[Any], None] | None = None,
    patches: int | None = None,
    on_plan: Callable[[ScanPlan], None] | None = None,
    threads: int = 1,
    variant: str | None = None,
    prune: bool = False,
    retries: int = RETRIES,
) -> ScanSummary:
    """Bring ``library`` up to date with the audio files under ``roots``.

    Parameters
    ----------
    library : deejai.engine.library.Library
        The library to write; this function is its only writer while it runs.
    roots : sequence of path
        Folders or files to scan.
    workers : int, optional
        Worker processes of the default pool; default: the usable CPU cores.
    executor : concurrent.futures.Executor, optional
        Run the analyses there instead (a ``ThreadPoolExecutor``, a Dask or Ray executor...);
        tasks are :func:`analyse_file` calls, which load the model lazily where no pool
        initializer ran, or ``executor.submit_analysis(file, model, patches)`` where the
        executor has that method (:class:`deejai.engine.cluster.ClusterExecutor`). The caller
        keeps ownership: it is not shut down.
    retry_errors : bool
        Analyse again files that failed before even when they did not change.
    model : str, optional
        Model card name (default ``deejai.models.DEFAULT_MODEL``).
    on_progress : callable, optional
        ``on_progress(done, total, errors, rate, eta_s)``: files analysed so far, files to
        analyse, failures so far, tracks per second, seconds left (None until known). Called
        from this thread after each result.
    should_stop : callable, optional
        Polled a few times a second; when it returns True no more files are submitted, queued
        work is cancelled, what finished is committed and the summary has ``cancelled=True``.
    batch_seconds, batch_size : float, int
        Commit at least every ``batch_seconds`` seconds or ``batch_size`` results.
    update_index : bool
        Bring the vector index sidecar up to date at the end.
    on_result : callable, optional
        ``on_result(analysis)`` with each :class:`~deejai.engine.analyse.TrackAnalysis` once it
        is committed (benchmarks read its ``timings_s``).
    patches : int, optional
        Patches analysed per track (None: :data:`deejai.engine.analyse.DEFAULT_PATCHES`;
        0: every patch). Applies to the files this scan analyses.
    variant : str, optional
        The model file to run (``"int8"``, ``"fp32"``; None or ``"auto"``: see
        :func:`deejai.engine.model.choose_variant`).
    threads : int
        Interpreter threads per worker of the default pool (1: the measured best on 2 cores
        with 2 workers; see ``benchmarks/scan.py --configs``).
    on_plan : callable, optional
        ``on_plan(plan)`` with the :class:`ScanPlan` once the walk is compared with the
        library, before any analysis (front ends say how many tracks are analysed again for a
        new model).
    prune : bool
        Remove every track under ``roots`` that the walk did not find, also where a folder
        could not be read or a root is missing or empty (by default those are kept, and the
        summary's ``kept_why`` says why).
    retries : int
        Times a file whose worker died is tried again in a fresh worker (the executor's
        ``submit_fresh`` where it has one) before it is recorded as a transient error; 0 for
        an executor whose ``retries_dead_workers`` is true (it retries on its own).

    Returns
    -------
    ScanSummary

    Raises
    ------
    ScanRunningError
        When another scan holds this library's lock.
    LibraryDamagedError
        When the database fails SQLite's quick check: nothing is written to it.
    ModelError, BackendUnavailableError
        When the model cannot be loaded in the workers (nothing is analysed).
    ClusterError
        When the Dask cluster of ``executor`` went away or cannot read the files, or a worker
        runs another model (:class:`~deejai.engine.errors.ClusterMismatchError`); what
        finished before is committed.
    """
    t0 = time.monotonic()
    if model is None:
        from deejai.models import DEFAULT_MODEL

        model = DEFAULT_MODEL
    abs_roots = [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots]
    summary = ScanSummary(model=model)
    started = _now()
    with scan_lock(library):
        library.require_healthy()  # never write to a damaged database
        report = WalkReport(skipped=summary.skipped)
        files = walk(abs_roots, report=report)
        summary.files = len(files)
        todo = plan(library, files, abs_roots, model=model, retry_errors=retry_errors,
                    report=report, prune=prune)
        summary.unchanged = todo.unchanged
        summary.kept, summary.kept_why = todo.kept, list(todo.kept_why)
        for line in todo.kept_why:  # the summary carries them to the user; this to the log
            log.info("%s", line)
        if on_plan is not None:
            on_plan(todo)
        if todo.moves or todo.removed:
            from deejai.engine.analyse import read_tags

            with library.transaction():
                for tid, f in todo.moves:
                    library.move_track(tid, f.path, f.size, f.mtime_ns, tags=read_tags(f.path))
                summary.removed = library.remove_tracks(todo.removed)
            summary.moved = len(todo.moves)
            summary.restored = len(todo.restored)
        if todo.work and should_stop is not None and should_stop():
            summary.cancelled = True  # cancelled before any worker started
        elif todo.work:
            _analyse_all(library, todo, summary, workers=workers, executor=executor,
                         model=model, on_progress=on_progress, should_stop=should_stop,
                         batch_seconds=batch_seconds, batch_size=batch_size, on_result=on_result,
                         patches=patches, threads=threads, variant=variant, retries=retries)
        elif on_progress is not None:
            on_progress(0, 0, 0, 0.0, 0.0)
        with library.transaction():
            summary.duplicates = library.update_duplicates()
        summary.elapsed_s = time.monotonic() - t0
        library.add_scan(started, _now(), abs_roots, summary.to_dict())
        if update_index:
            try:
                from deejai.engine.index import open_index

                open_index(library, model)
            except Exception:  # the index is rebuilt on demand; never fail a scan for it
                log.exception("updating the vector index failed")
    summary.elapsed_s = time.monotonic() - t0
    return summary


def _analyse_all(
    library: Any,
    todo: ScanPlan,
    summary: ScanSummary,
    *,
    workers: int | None,
    executor: Executor | None,
    model: str,
    on_progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
    batch_seconds: float,
    batch_size: int,
    on_result: Callable[[Any], None] | None = None,
    patches: int | None = None,
    threads: int = 1,
    variant: str | None = None,
    retries: int = RETRIES,
) -> None:
    work = todo.work
    is_new = {f.path for f in todo.new}
    is_reanalysis = {f.path for f in todo.reanalyse}
    total = len(work)
    own = executor is None
    if own:
        n = min(workers or default_workers(), total)
        executor = WorkerPool(n, initializer=init_worker, initargs=(model, threads, variant),
                              task_timeout_s=TASK_TIMEOUT_S)
        parallel = n
    else:
        parallel = int(getattr(executor, "_max_workers", None) or workers or default_workers())
    window = max(2, 2 * parallel)
    submit_fresh = getattr(executor, "submit_fresh", None) or executor.submit
    if getattr(executor, "retries_dead_workers", False):
        retries = 0  # the executor ran it on other workers already (Dask's allowed-failures)
    attempts: dict[str, int] = {}  # path -> retries used so far
    # an executor may analyse a file its own way (a Dask cluster ships the file, checks its
    # workers' model): ``submit_analysis(file, model, patches)`` returns the Future
    submit_analysis = getattr(executor, "submit_analysis", None)
    pending: dict[Future, FoundFile] = {}
    batch: list[tuple[FoundFile, Any, BaseException | None]] = []
    done = errors = 0
    t_start = time.monotonic()
    last_commit = t_start
    it = iter(work)
    exhausted = False
    cancelled = False

    def commit() -> None:
        nonlocal last_commit
        if not batch:
            return
        with library.transaction():
            for f, result, exc in batch:
                if exc is None:
                    library.save_analysis(result)
                    if f.path in is_new:
                        summary.added += 1
                    else:
                        summary.updated += 1
                        summary.reanalysed += f.path in is_reanalysis
                else:
                    text = _error_text(exc)
                    if attempts.get(f.path):
                        text += " (it died again on the retry in a fresh worker)"
                    library.save_error(f.path, f.size, f.mtime_ns, text, kind=error_kind(exc))
                    summary.errors += 1
        if on_result is not None:
            for _, result, exc in batch:
                if exc is None:
                    on_result(result)
        batch.clear()
        last_commit = time.monotonic()

    def progress() -> None:
        if on_progress is None:
            return
        elapsed = time.monotonic() - t_start
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (total - done) / rate if rate > 0 else None
        on_progress(done, total, errors, rate, eta)

    progress()
    try:
        while True:
            if not cancelled and should_stop is not None and should_stop():
                cancelled = True
            if cancelled:
                for fut in pending:
                    fut.cancel()
                break
            if not own:  # a cluster grows and shrinks while it scans
                window = max(2, 2 * int(getattr(executor, "_max_workers", None) or parallel))
            while not exhausted and len(pending) < window:
                f = next(it, None)
                if f is None:
                    exhausted = True
                    break
                if submit_analysis is not None:
                    pending[submit_analysis(f, model, patches)] = f
                else:
                    pending[executor.submit(analyse_file, f.path, model, patches)] = f
            if not pending:
                break
            finished, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in finished:
                f = pending.pop(fut)
                exc = fut.exception()
                if exc is not None and not isinstance(exc, (DeejaiError, Exception)):
                    raise exc  # pragma: no cover - BaseException from a thread executor
                if exc is None:
                    batch.append((f, fut.result(), None))
                else:
                    if _is_fatal(exc):
                        raise exc
                    if (isinstance(exc, WorkerDiedError) and not isinstance(exc, TaskTimeoutError)
                            and attempts.get(f.path, 0) < retries and not cancelled):
                        # the worker died under it (kill -9, OOM killer, a decoder's segfault):
                        # once more, in a worker of its own, before it counts as failed
                        attempts[f.path] = attempts.get(f.path, 0) + 1
                        summary.retried += 1
                        log.warning("%s: %s; trying it again in a fresh worker", f.path, exc)
                        pending[submit_fresh(analyse_file, f.path, model, patches)] = f
                        continue
                    batch.append((f, None, exc))
                    errors += 1
                done += 1
            if finished:
                progress()
            if len(batch) >= batch_size or (batch and time.monotonic() - last_commit >= batch_seconds):
                commit()
    except KeyboardInterrupt:
        cancelled = True
        for fut in pending:
            fut.cancel()
        if own:
            executor.terminate()  # type: ignore[union-attr]
            own = False
        commit()
        summary.cancelled = True
        raise
    except DeejaiError:
        # a fatal error (no model, the cluster lost): what finished is kept, the next scan
        # goes on from there
        for fut in pending:
            fut.cancel()
        commit()
        raise
    finally:
        if own:
            if cancelled:
                executor.terminate()  # type: ignore[union-attr]
            else:
                executor.shutdown(wait=True, cancel_futures=True)
    commit()
    summary.cancelled = cancelled


def _is_fatal(exc: BaseException) -> bool:
    """Errors that mean no file can be analysed (no model, no runtime): stop the scan."""
    from deejai.engine.errors import ClusterError, ModelError
    from deejai.engine.pool import PoolBrokenError

    return isinstance(exc, (ModelError, PoolBrokenError, ClusterError))
