"""The music library: one SQLite file, the truth every other structure is rebuilt from.

Schema (``PRAGMA user_version`` 2; :data:`MIGRATIONS` upgrades older files in order)::

    tracks   id, path UNIQUE, size, mtime_ns, audio_hash, duration_s, title, artist, album,
             albumartist, genre, year, tracknumber, status ('ok' | 'error' | 'gone'), error,
             error_kind ('permanent' | 'transient', for errors), duplicate_of -> tracks.id,
             scanned_at (ISO 8601 UTC), removed_at (ISO 8601 UTC, for gone tracks)
    vectors  (track_id, model) -> vector, intro, outro (float32 little-endian blobs),
             n_patches, revision (library revision that wrote the row)
    tags     (track_id, model) -> probabilities (float32 little-endian blob)
    scans    id, started, finished, roots (JSON), summary (JSON)
    meta     key -> value: 'revision' (bumped by every committed change to vectors or paths),
             'library_id' (random, identifies this file for the index sidecars)

The database runs in WAL mode, so readers (the daemon's threads, the CLI) see the last
committed state while a scan writes. There is one writer: the scan's main process commits the
workers' results in batches, each batch one transaction, so killing the scan loses at most the
uncommitted batch. Everything goes through sqlite-utils' :class:`~sqlite_utils.Database` over a
connection in autocommit mode with explicit ``BEGIN``/``COMMIT`` (:meth:`Library.transaction`).

A track the scan no longer finds is not deleted but marked *gone* (``removed_at``), with its
vectors: when its audio comes back it gets its id and vectors back. Gone tracks are left out
of every listing, count, search and playlist.

Damage: a SQLite error that says the file is corrupt (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``)
becomes a one-line :class:`~deejai.engine.errors.LibraryDamagedError` naming the file and
``deejai doctor``; after it, the connection refuses to write. A scan first runs SQLite's quick
check (:meth:`Library.require_healthy`), so nothing writes to a damaged file. A small state
file beside the database (``library.sqlite.state.json``: library id, track count) records that
a library existed, so that a 0-byte ``library.sqlite`` in its place is reported instead of
being taken for a new, empty library. The database and its WAL files are mode 0600.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from deejai.engine.catalogue import TAG_FIELDS
from deejai.engine._fs import PRIVATE_FILE_MODE, atomic_write, private_dir, private_file, tighten
from deejai.engine.errors import LibraryDamagedError, LibraryError

__all__ = ["Library", "MIGRATIONS", "SCHEMA_VERSION", "TAG_FIELDS", "vector_to_blob",
           "blob_to_vector", "state_file", "is_corruption"]

log = logging.getLogger(__name__)


TRACK_COLUMNS = (
    "id", "path", "size", "mtime_ns", "audio_hash", "duration_s", *TAG_FIELDS,
    "status", "error", "error_kind", "duplicate_of", "scanned_at", "removed_at",
)

#: SQLite result codes that mean the file itself is damaged (https://sqlite.org/rescode.html).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_corruption(exc: BaseException) -> bool:
    """True when the SQLite error ``exc`` says the database file is damaged or not one."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()  # pragma: no cover - Python < 3.11 has no sqlite_errorcode
    return "malformed" in text or "not a database" in text


def state_file(db_path: str | os.PathLike) -> Path:
    """The small file beside the database that says a library exists there:
    ``<db file>.state.json`` with ``library_id`` and ``tracks``."""
    p = Path(db_path)
    return p.with_name(p.name + ".state.json")


def _read_state(db_path: Path) -> dict[str, Any] | None:
    try:
        with open(state_file(db_path), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def vector_to_blob(v: np.ndarray | None) -> bytes | None:
    """A float32 little-endian blob of ``v`` (any shape, flattened); None stays None."""
    if v is None:
        return None
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes | None) -> np.ndarray | None:
    """The float32 vector of a blob written by :func:`vector_to_blob` (native byte order)."""
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------- migrations


def _migration_1(db: sqlite3.Connection) -> None:
    """The first schema: tracks, vectors, tags, scans, meta."""
    # one statement at a time: executescript() would COMMIT the migration's transaction
    script = """
        CREATE TABLE tracks (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            audio_hash TEXT,
            duration_s REAL,
            title TEXT, artist TEXT, album TEXT, albumartist TEXT, genre TEXT,
            year INTEGER, tracknumber INTEGER,
            status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),
            error TEXT,
            duplicate_of INTEGER REFERENCES tracks(id) ON DELETE SET NULL,
            scanned_at TEXT
        );
        CREATE INDEX tracks_audio_hash ON tracks(audio_hash);
        CREATE INDEX tracks_status ON tracks(status);
        CREATE TABLE vectors (
            track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL,
            intro BLOB,
            outro BLOB,
            n_patches INTEGER,
            revision INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (track_id, model)
        );
        CREATE INDEX vectors_model_revision ON vectors(model, revision);
        CREATE TABLE tags (
            track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            probabilities BLOB NOT NULL,
            PRIMARY KEY (track_id, model)
        );
        CREATE TABLE scans (
            id INTEGER PRIMARY KEY,
            started TEXT NOT NULL,
            finished TEXT,
            roots TEXT,
            summary TEXT
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO meta (key, value) VALUES ('revision', '0')")
    db.execute("INSERT INTO meta (key, value) VALUES ('library_id', ?)", (uuid.uuid4().hex,))


def _migration_2(db: sqlite3.Connection) -> None:
    """Removed tracks are kept as 'gone' (with ``removed_at``), so that a file that comes back
    gets its id and vectors back; an error is 'permanent' (the file's own: decoding, format)
    or 'transient' (a worker died, the file could not be read), which every scan retries.

    SQLite cannot change a CHECK constraint in place: the table is rebuilt (the procedure of
    https://sqlite.org/lang_altertable.html#otheralter; foreign keys are off meanwhile, see
    :meth:`Library._migrate`). Errors recorded by the old scan when a worker died become
    transient, so the next scan retries them.
    """
    old_cols = [r[1] for r in db.execute("PRAGMA table_info(tracks)")]
    db.execute("""
        CREATE TABLE tracks_v2 (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            audio_hash TEXT,
            duration_s REAL,
            title TEXT, artist TEXT, album TEXT, albumartist TEXT, genre TEXT,
            year INTEGER, tracknumber INTEGER,
            status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error', 'gone')),
            error TEXT,
            error_kind TEXT CHECK (error_kind IS NULL OR error_kind IN ('permanent', 'transient')),
            duplicate_of INTEGER REFERENCES tracks(id) ON DELETE SET NULL,
            scanned_at TEXT,
            removed_at TEXT
        )""")
    cols = ", ".join(old_cols)
    db.execute(f"INSERT INTO tracks_v2 ({cols}) SELECT {cols} FROM tracks")
    db.execute(
        "UPDATE tracks_v2 SET error_kind = CASE WHEN error LIKE 'worker process % died%' "
        "THEN 'transient' ELSE 'permanent' END WHERE status = 'error'"
    )
    db.execute("DROP TABLE tracks")
    db.execute("ALTER TABLE tracks_v2 RENAME TO tracks")
    db.execute("CREATE INDEX tracks_audio_hash ON tracks(audio_hash)")
    db.execute("CREATE INDEX tracks_status ON tracks(status)")


#: Schema migrations; ``MIGRATIONS[i]`` takes a file from ``user_version`` i to i + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


#: The order ``Library.tracks`` lists tracks in.
_TRACK_ORDER = (
    " ORDER BY coalesce(artist, '') COLLATE NOCASE, coalesce(album, '') COLLATE NOCASE,"
    " CAST(tracknumber AS INTEGER), path"
)

# One search index per library file, status and revision, shared by every connection of the
# process (the daemon has one connection per thread): folding 100,000 tracks once per revision.
_search_cache: dict[tuple[str, str, str], tuple[int, Any]] = {}
_search_lock = threading.Lock()


class Library:
    """The SQLite library of one user (or of one ``DEEJAI_HOME``).

    Parameters
    ----------
    path : str or Path, optional
        The database file; default ``paths().library_file`` (honours ``DEEJAI_HOME``). Its
        folder is created; a new file gets the current schema, an older one is migrated.

    Raises
    ------
    LibraryError
        When the file is not a SQLite database, is newer than this deejai, or cannot be opened.
    LibraryDamagedError
        When the file is damaged (an older file is never migrated then), or is 0 bytes where
        the state file says a library was.

    Notes
    -----
    One connection per object. It may be used from several threads (calls are serialised by a
    lock), but the intended use is one ``Library`` per thread; SQLite's WAL lets readers run
    beside the single writer.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None:
            from deejai.engine.config import paths

            path = paths().library_file
        self.path = Path(path).expanduser().absolute()
        self._lock = threading.RLock()
        self._dirty = False
        self._in_tx = False
        #: Why this file is damaged (SQLite's words), once a read found it so; writes refuse.
        self.damaged: str | None = None
        self._healthy = False
        self._check_not_emptied()
        try:
            if not self.path.parent.exists():
                private_dir(self.path.parent)
            private_file(self.path)  # born 0600 (its WAL files take its mode), or tightened
            for suffix in ("-wal", "-shm"):
                tighten(str(self.path) + suffix, PRIVATE_FILE_MODE)
            conn = sqlite3.connect(
                str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LibraryError(f"{self.path}: cannot open the library ({exc})") from None
        self.conn = conn
        import sqlite_utils

        self.db = sqlite_utils.Database(conn)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network filesystem
                raise LibraryError(f"{self.path}: cannot switch the library to WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()  # with foreign keys off: a migration may rebuild a table
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_corruption(exc) and self.path.stat().st_size > 0 and _read_state(self.path):
                raise self._damage(exc) from None
            raise LibraryError(f"{self.path}: not a deejai library ({exc})") from None
        except LibraryError:
            conn.close()
            raise
        self._record_state()

    def _check_not_emptied(self) -> None:
        """Refuse a 0-byte database where the state file says a library was."""
        try:
            size = self.path.stat().st_size
        except OSError:
            state = _read_state(self.path)
            if state and state.get("library_id"):
                log.warning("%s was missing: a new, empty library starts here (the old one "
                            "held %s tracks)", self.path, state.get("tracks", "some"))
            return  # a new library (the state file is rewritten for it)
        state = _read_state(self.path)
        if size == 0 and state and state.get("library_id"):
            n = state.get("tracks")
            what = f"a library of {n} tracks" if isinstance(n, int) else "a library"
            raise LibraryDamagedError(
                f"{self.path}: the library file is empty (0 bytes), but {what} was here; "
                "restore it from a backup, or run `deejai doctor --reset` to start a new one",
                path=str(self.path),
            )

    def _record_state(self, tracks: int | None = None) -> None:
        """Write the state file when it is missing, names another library, or (``tracks``
        given) holds another track count; failures to write are ignored (a read-only
        folder)."""
        state = _read_state(self.path) or {}
        library_id = self.library_id
        if state.get("library_id") == library_id and (tracks is None or state.get("tracks") == tracks):
            return
        if tracks is None:
            tracks = state.get("tracks") if state.get("library_id") == library_id else None
        data = {"library_id": library_id, "tracks": tracks,
                "note": "deejai: a library exists beside this file (see docs/reliability.md)"}
        try:
            atomic_write(state_file(self.path), (json.dumps(data) + "\n").encode(), private=True)
        except OSError:  # pragma: no cover - a read-only data folder
            pass

    def _damage(self, exc: BaseException) -> LibraryDamagedError:
        """Remember that the file is damaged and return the one-line error to raise."""
        self.damaged = str(exc)
        return LibraryDamagedError(
            f"{self.path}: the library database is damaged ({exc}); nothing more is written "
            "to it. Run `deejai doctor` to check it and `deejai doctor --recover` to rebuild "
            "it (docs/reliability.md)",
            path=str(self.path),
        )

    def _sqlite_error(self, exc: sqlite3.Error) -> LibraryError:
        if is_corruption(exc):
            return self._damage(exc)
        return LibraryError(f"{self.path}: {exc}")

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.path}: library schema {version} is newer than this deejai "
                f"(knows {SCHEMA_VERSION}); upgrade deejai"
            )
        if version == SCHEMA_VERSION:
            return
        if version > 0:
            problem = self._quick_check()
            if problem != "ok":  # never migrate (write to) a damaged file
                raise self._damage(sqlite3.DatabaseError(problem))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the write lock
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for i in range(version, SCHEMA_VERSION):
                MIGRATIONS[i](self.conn)
                self.conn.execute(f"PRAGMA user_version = {i + 1}")
            broken = self.conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:  # pragma: no cover - a migration bug
                raise LibraryError(f"{self.path}: migration broke {len(broken)} references")
            self.conn.execute("COMMIT")
        except BaseException:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - SQLite rolled back already
                pass
            raise

    def _quick_check(self) -> str:
        """SQLite's ``PRAGMA quick_check``: "ok", or what is wrong (one line)."""
        try:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        text = "; ".join(str(r[0]) for r in rows[:5])
        return text + (f" (and {len(rows) - 5} more problems)" if len(rows) > 5 else "")

    def require_healthy(self) -> None:
        """Run SQLite's quick check once per connection (a scan does, before it writes).

        Raises
        ------
        LibraryDamagedError
            When the file is damaged; this connection then refuses every write.
        """
        if self.damaged is not None:
            raise self._damage(sqlite3.DatabaseError(self.damaged))
        if self._healthy:
            return
        with self._lock:
            problem = self._quick_check()
        if problem != "ok":
            raise self._damage(sqlite3.DatabaseError(problem))
        self._healthy = True

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the file."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    @contextmanager
    def transaction(self) -> Iterator["Library"]:
        """A write transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``); rolled back on error.

        The library revision is incremented once, in the same transaction, when anything inside
        changed vectors or paths. Nested use joins the outer transaction.
        """
        with self._lock:
            if self._in_tx:
                yield self
                return
            if self.damaged is not None:
                raise self._damage(sqlite3.DatabaseError(self.damaged))
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._sqlite_error(exc) from None
            self._in_tx = True
            self._dirty = False
            try:
                try:
                    yield self
                    if self._dirty:
                        self.conn.execute(
                            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'"
                        )
                    self.conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise self._sqlite_error(exc) from None
            except BaseException:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite rolled back already (a damaged page, a full disk)
                    pass
                raise
            finally:
                self._in_tx = False
                self._dirty = False

    @contextmanager
    def snapshot(self) -> Iterator["Library"]:
        """A read transaction: every read inside sees the same committed state."""
        with self._lock:
            if self._in_tx:
                yield self
                return
            try:
                self.conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise self._sqlite_error(exc) from None
            self._in_tx = True
            try:
                try:
                    yield self
                except sqlite3.Error as exc:
                    raise self._sqlite_error(exc) from None
            finally:
                self._in_tx = False
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error:  # nothing was written; a damaged file says so above
                    pass

    def _require_tx(self) -> None:
        if not self._in_tx:
            raise LibraryError("library writes must run inside Library.transaction()")

    def _next_revision(self) -> int:
        """The revision the current write transaction will commit as."""
        self._dirty = True
        return self.revision + 1

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ meta

    @property
    def revision(self) -> int:
        """Counter bumped by every committed change to vectors or track paths."""
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    @property
    def library_id(self) -> str:
        """Random id of this database file (index sidecars record it)."""
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'library_id'").fetchone()
        return str(row[0]) if row else ""

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _track_dict(row: dict[str, Any]) -> dict[str, Any]:
        return {k: row.get(k) for k in TRACK_COLUMNS}

    def track(self, track_id: int, *, gone: bool = False) -> dict[str, Any] | None:
        """The row of track ``track_id`` as a plain dict (all ``tracks`` columns), or None
        (also for a gone track, unless ``gone=True``)."""
        sql = "SELECT * FROM tracks WHERE id = ?" + ("" if gone else " AND status != 'gone'")
        rows = self._query(sql, (int(track_id),))
        return self._track_dict(rows[0]) if rows else None

    def track_by_path(self, path: str | os.PathLike, *, gone: bool = False) -> dict[str, Any] | None:
        """The track stored at ``path`` (made absolute, not resolved), or None (also for a
        gone track, unless ``gone=True``)."""
        p = os.path.abspath(os.path.expanduser(os.fspath(path)))
        sql = "SELECT * FROM tracks WHERE path = ?" + ("" if gone else " AND status != 'gone'")
        rows = self._query(sql, (p,))
        return self._track_dict(rows[0]) if rows else None

    def tracks(
        self, query: str | None = None, limit: int | None = None, status: str | None = "ok"
    ) -> list[dict[str, Any]]:
        """Tracks ``query`` finds, by the one search rule (:mod:`deejai.engine.search`).

        Parameters
        ----------
        query : str, optional
            Words matched case- and accent-insensitively: each starts a word of "artist
            title album file-name" (else occurs anywhere in it); None lists every track, a
            query without letters or digits none.
        limit : int, optional
            At most this many rows (ordered by artist, album, track number, path).
        status : {"ok", "error", "gone", None}
            Only tracks with this status; None for every track in the library (ok and
            error; "gone" lists the tracks removed by a scan).
        """
        where, params = [], []
        if status is not None:
            if status not in ("ok", "error", "gone"):
                raise LibraryError(
                    f"unknown track status {status!r} (use 'ok', 'error' or 'gone')")
            where.append("status = ?")
            params.append(status)
        else:
            where.append("status != 'gone'")
        if query is not None and query.strip():
            ids = [int(r["id"]) for r in self._search_index(status).match(query)]
            if limit is not None:
                ids = ids[: int(limit)]
            if not ids:
                return []
            rows = self._query("SELECT * FROM tracks WHERE id IN (SELECT value FROM json_each(?))",
                               (json.dumps(ids),))
            by_id = {int(r["id"]): r for r in rows}
            return [self._track_dict(by_id[i]) for i in ids if i in by_id]
        sql = "SELECT * FROM tracks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += _TRACK_ORDER
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [self._track_dict(r) for r in self._query(sql, params)]

    def _search_index(self, status: str | None) -> Any:
        """The :class:`~deejai.engine.search.SearchIndex` of the tracks with ``status``, in
        listing order; cached per library revision for ok tracks (error rows can change
        without a new revision, so they are read each time)."""
        from deejai.engine.search import SearchIndex

        sql = "SELECT id, path, artist, title, album FROM tracks"
        sql += " WHERE status = ?" if status is not None else " WHERE status != 'gone'"
        sql += _TRACK_ORDER
        args = (status,) if status is not None else ()
        if status != "ok":
            return SearchIndex(self._query(sql, args))
        key = (str(self.path), self.library_id, status)
        revision = self.revision
        with _search_lock:
            cached = _search_cache.get(key)
            if cached is not None and cached[0] == revision:
                return cached[1]
        index = SearchIndex(self._query(sql, args))
        index.haystacks()  # fold now, outside the lock, once
        with _search_lock:
            _search_cache[key] = (revision, index)
        return index

    def records(self) -> list[dict[str, Any]]:
        """``{id, path, artist, title, album}`` of every ok track (for track resolution)."""
        return self._query(
            "SELECT id, path, coalesce(artist, '') AS artist, coalesce(title, '') AS title, "
            "coalesce(album, '') AS album FROM tracks WHERE status = 'ok' ORDER BY id"
        )

    def errors(self) -> list[dict[str, Any]]:
        """Files that failed to scan: ``{id, path, error, error_kind, size, mtime_ns,
        scanned_at}``."""
        return self._query(
            "SELECT id, path, error, error_kind, size, mtime_ns, scanned_at FROM tracks "
            "WHERE status = 'error' ORDER BY path"
        )

    def stats(self) -> dict[str, Any]:
        """Counts for ``deejai status``.

        Returns
        -------
        dict
            ``tracks`` (ok), ``errors``, ``duplicates``, ``removed`` (gone tracks, kept so
            that they get their ids back if their files come back), ``model`` (the model most vectors
            belong to, or None), ``hours`` (total duration of ok tracks), ``last_scan``
            (``{started, finished, summary}`` or None), ``size`` (bytes of the database and its
            WAL), ``revision``, ``path``.
        """
        with self.snapshot():
            counts = self._query(
                "SELECT sum(status = 'ok') AS ok, sum(status = 'error') AS err, "
                "sum(status = 'gone') AS gone, "
                "sum(status = 'ok' AND duplicate_of IS NOT NULL) AS dup, "
                "sum(CASE WHEN status = 'ok' THEN coalesce(duration_s, 0) ELSE 0 END) AS secs "
                "FROM tracks"
            )[0]
            models = self._query(
                "SELECT model, count(*) AS n FROM vectors GROUP BY model ORDER BY n DESC LIMIT 1"
            )
            scans = self._query(
                "SELECT started, finished, roots, summary FROM scans ORDER BY id DESC LIMIT 1"
            )
            revision = self.revision
        last = None
        if scans:
            s = scans[0]
            last = {
                "started": s["started"],
                "finished": s["finished"],
                "roots": json.loads(s["roots"]) if s["roots"] else [],
                "summary": json.loads(s["summary"]) if s["summary"] else None,
            }
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.path.getsize(str(self.path) + suffix)
            except OSError:
                pass
        return {
            "tracks": int(counts["ok"] or 0),
            "errors": int(counts["err"] or 0),
            "duplicates": int(counts["dup"] or 0),
            "removed": int(counts["gone"] or 0),
            "model": models[0]["model"] if models else None,
            "hours": round(float(counts["secs"] or 0.0) / 3600.0, 3),
            "last_scan": last,
            "size": size,
            "revision": revision,
            "path": str(self.path),
        }

    def model_coverage(self) -> dict[str, int]:
        """Ok tracks with a vector, per model (``{"msd-musicnn-v2": 812, "msd-musicnn": 1200}``)."""
        rows = self._query(
            "SELECT v.model, count(*) AS n FROM vectors v JOIN tracks t ON t.id = v.track_id "
            "WHERE t.status = 'ok' GROUP BY v.model ORDER BY n DESC"
        )
        return {r["model"]: int(r["n"]) for r in rows}

    def serving_model(self, preferred: str) -> str:
        """The model whose vectors playlists use: ``preferred`` (the configured model) once it
        covers every ok track, or while no other model covers more; else (a library scanned with
        an older model and not yet fully re-analysed) the model that covers the most tracks, so
        that playlists keep working from the old vectors until the new ones are complete."""
        coverage = self.model_coverage()
        mine = coverage.get(preferred, 0)
        best = max(coverage, key=coverage.get, default=preferred)
        return best if coverage.get(best, 0) > mine else preferred

    def scan_state(self, model: str) -> dict[str, dict[str, Any]]:
        """What a scan compares the file system with: ``path -> {id, size, mtime_ns, status,
        error_kind, audio_hash, has_vector}`` for every track, gone ones included
        (``has_vector``: a vector for ``model``)."""
        rows = self._query(
            "SELECT t.id, t.path, t.size, t.mtime_ns, t.status, t.error_kind, t.audio_hash, "
            "(v.track_id IS NOT NULL) AS has_vector FROM tracks t "
            "LEFT JOIN vectors v ON v.track_id = t.id AND v.model = ?",
            (model,),
        )
        return {r.pop("path"): r for r in rows}

    def vectors(
        self, model: str, *, since_revision: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Track vectors of ok tracks for ``model``.

        Parameters
        ----------
        model : str
        since_revision : int, optional
            Only rows written by a revision after this one.

        Returns
        -------
        ids : np.ndarray, int64, shape (n,)
        vectors : np.ndarray, float32, shape (n, d)
        """
        sql = (
            "SELECT v.track_id, v.vector FROM vectors v JOIN tracks t ON t.id = v.track_id "
            "WHERE v.model = ? AND t.status = 'ok'"
        )
        params: list[Any] = [model]
        if since_revision is not None:
            sql += " AND v.revision > ?"
            params.append(int(since_revision))
        sql += " ORDER BY v.track_id"
        with self._lock:
            rows = self.conn.execute(sql, params).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        # float32 is "<f4" on every platform deejai runs on: no copy (the array is read-only)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32, copy=False)
        return ids, vecs.reshape(len(rows), -1)

    def vector_ids(self, model: str) -> np.ndarray:
        """Ids (int64, sorted) of ok tracks that have a vector for ``model``."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT v.track_id FROM vectors v JOIN tracks t ON t.id = v.track_id "
                "WHERE v.model = ? AND t.status = 'ok' ORDER BY v.track_id",
                (model,),
            ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def catalogue(self, model: str) -> Any:
        """An in-memory :class:`~deejai.engine.catalogue.Catalogue` of ok tracks with vectors.

        Parameters
        ----------
        model : str
            Card name of the model whose vectors to load (e.g. ``"msd-musicnn"``).

        Returns
        -------
        Catalogue
            Rows ordered by track id; vectors, intro and outro re-normalised to unit length;
            ``tag_labels`` from the model card (empty when the card cannot be read).
        """
        from deejai.engine.catalogue import Catalogue, l2_normalise

        with self.snapshot():
            with self._lock:
                rows = self.conn.execute(
                    "SELECT t.id, t.duration_s, coalesce(t.artist, ''), coalesce(t.audio_hash, ''),"
                    " v.vector, v.intro, v.outro, g.probabilities FROM tracks t"
                    " JOIN vectors v ON v.track_id = t.id AND v.model = ?"
                    " LEFT JOIN tags g ON g.track_id = t.id AND g.model = ?"
                    " WHERE t.status = 'ok' ORDER BY t.id",
                    (model, model),
                ).fetchall()
        labels = _tag_labels(model)
        n = len(rows)
        if n == 0:
            return Catalogue(
                ids=np.zeros(0, np.int64), vectors=np.zeros((0, 0), np.float32),
                duration_s=np.zeros(0, np.float32), artist=[], audio_hash=[], tag_labels=labels,
            )

        def stack(col: int) -> np.ndarray | None:
            if any(r[col] is None for r in rows):
                return None
            return np.frombuffer(b"".join(r[col] for r in rows), dtype="<f4").reshape(n, -1)

        vectors = stack(4)
        intro, outro, tag_probs = stack(5), stack(6), stack(7)
        return Catalogue(
            ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
            vectors=l2_normalise(vectors),
            duration_s=np.array([r[1] or 0.0 for r in rows], dtype=np.float32),
            artist=[r[2] for r in rows],
            audio_hash=[r[3] for r in rows],
            intro=None if intro is None else l2_normalise(intro),
            outro=None if outro is None else l2_normalise(outro),
            tag_probs=None if tag_probs is None else tag_probs.astype(np.float32),
            tag_labels=labels,
        )

    # ------------------------------------------------------------------ writes (scan)

    def save_analysis(self, analysis: Any, *, scanned_at: str | None = None) -> int:
        """Store one :class:`~deejai.engine.analyse.TrackAnalysis`: track row, vector, tags.

        Must run inside :meth:`transaction`. An existing row with the same path is updated
        (keeping its id); its status becomes 'ok' and its error text is cleared.

        Returns
        -------
        int
            The track id.
        """
        self._require_tx()
        tags = dict(getattr(analysis, "tags", None) or {})
        values = {
            "path": str(analysis.path),
            "size": int(analysis.size),
            "mtime_ns": int(analysis.mtime_ns),
            "audio_hash": analysis.audio_hash,
            "duration_s": float(analysis.duration_s),
            **_tag_values(tags),
            "scanned_at": scanned_at or _now(),
            "error_kind": None,
            "removed_at": None,
        }
        track_id = self._upsert_track(values, status="ok", error=None)
        revision = self._next_revision()
        patch_vectors = getattr(analysis, "patch_vectors", None)
        n_patches = int(len(patch_vectors)) if patch_vectors is not None else None
        self.conn.execute(
            "INSERT OR REPLACE INTO vectors (track_id, model, vector, intro, outro, n_patches, revision)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                track_id, analysis.model, vector_to_blob(analysis.vector),
                vector_to_blob(getattr(analysis, "intro", None)),
                vector_to_blob(getattr(analysis, "outro", None)), n_patches, revision,
            ),
        )
        probs = getattr(analysis, "tag_probs", None)
        if probs is not None:
            self.conn.execute(
                "INSERT OR REPLACE INTO tags (track_id, model, probabilities) VALUES (?, ?, ?)",
                (track_id, analysis.model, vector_to_blob(probs)),
            )
        return track_id

    def save_error(self, path: str, size: int, mtime_ns: int, error: str, *,
                   kind: str = "permanent") -> int:
        """Record that ``path`` failed to scan (status 'error'); drops its vectors and tags.

        Parameters
        ----------
        kind : {"permanent", "transient"}
            Permanent: the file's own fault (decoding, format), retried when it changes;
            transient (a worker died, the file could not be read): every scan retries it
            (:func:`deejai.engine.scan.error_kind`).
        """
        self._require_tx()
        if kind not in ("permanent", "transient"):
            raise LibraryError(f"unknown error kind {kind!r} (use 'permanent' or 'transient')")
        values = {"path": str(path), "size": int(size), "mtime_ns": int(mtime_ns),
                  "scanned_at": _now(), "error_kind": kind, "removed_at": None}
        track_id = self._upsert_track(values, status="error", error=str(error))
        cur = self.conn.execute("DELETE FROM vectors WHERE track_id = ?", (track_id,))
        self.conn.execute("DELETE FROM tags WHERE track_id = ?", (track_id,))
        if cur.rowcount:
            self._next_revision()
        return track_id

    def _upsert_track(self, values: dict[str, Any], *, status: str, error: str | None) -> int:
        values = {**values, "status": status, "error": error}
        cols = list(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "path")
        row = self.conn.execute(
            f"INSERT INTO tracks ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT(path) DO UPDATE SET {updates} RETURNING id",
            [values[c] for c in cols],
        ).fetchone()
        return int(row[0])

    def move_track(self, track_id: int, path: str, size: int, mtime_ns: int,
                   tags: dict[str, Any] | None = None) -> None:
        """A file was moved or renamed: give track ``track_id`` its new path; vectors stay.

        ``tags`` (as :func:`deejai.engine.analyse.read_tags` returns them), when given, replace
        the stored tags: a renamed file is often re-tagged too. A *gone* track (removed by an
        earlier scan) whose audio came back is live again.
        """
        self._require_tx()
        values: dict[str, Any] = {"path": str(path), "size": int(size), "mtime_ns": int(mtime_ns),
                                  "scanned_at": _now(), "status": "ok", "removed_at": None}
        if tags is not None:
            values.update(_tag_values(tags))
        sets = ", ".join(f"{c} = ?" for c in values)
        self.conn.execute(f"UPDATE tracks SET {sets} WHERE id = ?", [*values.values(), int(track_id)])
        self._next_revision()

    def remove_tracks(self, track_ids: Sequence[int]) -> int:
        """Remove tracks from the library; returns how many were removed.

        An ok track becomes *gone*: left out of everything, but kept with its vectors, so that
        when its audio comes back (:meth:`move_track`, or a scan that finds the same path) it
        gets its id back. An error row is deleted (it holds nothing worth keeping).
        """
        self._require_tx()
        n = 0
        now = _now()
        for tid in track_ids:
            n += self.conn.execute(
                "UPDATE tracks SET status = 'gone', removed_at = ?, duplicate_of = NULL "
                "WHERE id = ? AND status = 'ok'", (now, int(tid))).rowcount
            n += self.conn.execute(
                "DELETE FROM tracks WHERE id = ? AND status = 'error'", (int(tid),)).rowcount
        if n:
            self.conn.execute(
                "UPDATE tracks SET duplicate_of = NULL WHERE duplicate_of IN "
                "(SELECT id FROM tracks WHERE status = 'gone')")
            self._next_revision()
        return n

    def update_duplicates(self) -> int:
        """Mark ok tracks that share an audio hash: all but the lowest id get ``duplicate_of``.

        Returns
        -------
        int
            Number of ok tracks marked as a duplicate of another.
        """
        self._require_tx()
        self.conn.execute(
            "UPDATE tracks SET duplicate_of = ("
            " SELECT min(o.id) FROM tracks o WHERE o.audio_hash = tracks.audio_hash"
            " AND o.status = 'ok' AND o.id < tracks.id)"
            " WHERE status = 'ok' AND audio_hash IS NOT NULL"
        )
        self.conn.execute("UPDATE tracks SET duplicate_of = NULL WHERE status != 'ok'")
        return int(
            self.conn.execute(
                "SELECT count(*) FROM tracks WHERE status = 'ok' AND duplicate_of IS NOT NULL"
            ).fetchone()[0]
        )

    def add_scan(self, started: str, finished: str | None, roots: Sequence[str],
                 summary: dict[str, Any] | None) -> int:
        """Append a row to the scan history; returns its id."""
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO scans (started, finished, roots, summary) VALUES (?, ?, ?, ?)",
                (started, finished, json.dumps(list(roots)),
                 json.dumps(summary) if summary is not None else None),
            )
            scan_id = int(cur.lastrowid)
        n = self.conn.execute("SELECT count(*) FROM tracks WHERE status = 'ok'").fetchone()[0]
        self._record_state(tracks=int(n))
        return scan_id

    def count_under(self, folder: str | os.PathLike) -> int:
        """Live tracks (ok or error) whose path is ``folder`` or lies under it."""
        top = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        prefix = top.rstrip(os.sep) + os.sep
        rows = self._query(
            "SELECT count(*) AS n FROM tracks WHERE status != 'gone' AND "
            "(path = ? OR substr(path, 1, ?) = ?)", (top, len(prefix), prefix))
        return int(rows[0]["n"])

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" or SQLite's description of the damage."""
        try:
            rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return "; ".join(str(r[0]) for r in rows)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a :class:`Library` method: a SQLite error becomes a one-line LibraryError (a
    damaged file: :class:`~deejai.engine.errors.LibraryDamagedError`) naming the file."""

    @functools.wraps(fn)
    def wrapper(self: "Library", *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from None

    return wrapper


_UNGUARDED = {"close", "transaction", "snapshot", "require_healthy", "integrity_check"}
for _name, _value in list(vars(Library).items()):
    if _name.startswith("_") or _name in _UNGUARDED:
        continue
    if isinstance(_value, property) and _value.fget is not None:
        setattr(Library, _name, property(_guarded(_value.fget), doc=_value.__doc__))
    elif callable(_value) and not isinstance(_value, (staticmethod, classmethod)):
        setattr(Library, _name, _guarded(_value))


def _tag_values(tags: dict[str, Any]) -> dict[str, Any]:
    """Tag columns from a tags dict: str for text fields, int where possible for year and
    tracknumber; missing or empty values become NULL."""
    out: dict[str, Any] = {}
    for f in TAG_FIELDS:
        value = tags.get(f)
        if value is None or value == "":
            out[f] = None
        elif f in ("year", "tracknumber"):
            try:
                out[f] = int(value)
            except (TypeError, ValueError):
                out[f] = str(value)
        else:
            out[f] = str(value)
    return out


def _tag_labels(model: str) -> list[str]:
    """Tag labels of ``model`` from its card (empty when the card cannot be read)."""
    try:
        from deejai.engine import model as model_mod

        loader = getattr(model_mod, "load_card", None)
        if loader is not None:
            return list(loader(model).tag_labels)
    except Exception:  # noqa: BLE001 - labels are optional metadata
        pass
    try:
        import deejai.models

        card = Path(deejai.models.__file__).parent / model / "card.json"
        with open(card, encoding="utf-8") as fh:
            return list(json.load(fh).get("tag_labels") or [])
    except (OSError, ValueError, TypeError):
        return []
