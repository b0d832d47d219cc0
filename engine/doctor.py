"""``deejai doctor``: check the library files, and rebuild a damaged database.

:func:`diagnose` looks at the files of one library without writing to them: the database
(SQLite's full ``PRAGMA integrity_check``), the state file that says a library exists there,
and the vector index sidecars. :func:`recover` builds a new database from what a damaged one
still holds and puts it in place, keeping the damaged file beside it; :func:`reset` moves an
emptied (0-byte) database aside so that the next start makes a new library.

Recovery, in order of preference:

1. SQLite's own recovery, ``sqlite3 <db> .recover`` (https://sqlite.org/recovery.html), when
   a ``sqlite3`` program with a working ``.recover`` is on the PATH: it reads the pages
   directly and finds rows that no longer hang off the b-trees.
2. Otherwise a salvage copy: every table is read in rowid order into a fresh database with
   the current schema; where a damaged page breaks the reading, the copy skips ahead (rowids
   one, two, four... further on) until it can read again, so what lies beyond the damage is
   kept. This is the tolerant form of ``iterdump``.

Either way the result must pass ``integrity_check``; references that point at lost rows are
dropped, the vector index sidecars are deleted (they are rebuilt from the new database), and
the next ``deejai scan`` analyses again the files whose rows were lost.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from deejai.engine._fs import PRIVATE_FILE_MODE, private_file, tighten
from deejai.engine.errors import LibraryError

__all__ = ["diagnose", "recover", "reset", "sqlite_recover_available"]

#: Tables copied by the salvage, parents first.
_TABLES = ("meta", "tracks", "vectors", "tags", "scans")

_BATCH = 500


def _sidecars(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.stem}.*.index.npz"))


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _connect(db: Path) -> sqlite3.Connection:
    """A connection that never creates the file."""
    return sqlite3.connect(f"file:{db}?mode=rw", uri=True, isolation_level=None, timeout=30)


def _integrity(db: Path) -> str:
    try:
        con = _connect(db)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
        text = "; ".join(str(r[0]) for r in rows[:10])
        return text + (f" (and {len(rows) - 10} more)" if len(rows) > 10 else "")
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        con.close()


def diagnose(db: str | os.PathLike) -> dict[str, Any]:
    """Look at a library's files; writes nothing.

    Parameters
    ----------
    db : path
        The database file (``paths().library_file``).

    Returns
    -------
    dict
        ``path``, ``exists``, ``size`` (bytes), ``state`` (the state file's content or None),
        ``database``: "ok", "missing", "emptied" (0 bytes where a library was), "new" (0
        bytes, no library known) or "damaged"; ``problem`` (SQLite's words when damaged),
        ``sidecars``: ``[{"path", "ok", "problem"}]``.
    """
    from deejai.engine.index import load_index
    from deejai.engine.library import _read_state

    path = Path(db).expanduser().absolute()
    out: dict[str, Any] = {"path": str(path), "exists": path.exists(), "size": 0,
                           "state": _read_state(path), "problem": None, "sidecars": []}
    if not out["exists"]:
        out["database"] = "missing"
    else:
        out["size"] = path.stat().st_size
        if out["size"] == 0:
            out["database"] = "emptied" if (out["state"] or {}).get("library_id") else "new"
        else:
            problem = _integrity(path)
            out["database"] = "ok" if problem == "ok" else "damaged"
            out["problem"] = None if problem == "ok" else problem
    for sidecar in _sidecars(path):
        try:
            load_index(sidecar)
            out["sidecars"].append({"path": str(sidecar), "ok": True, "problem": None})
        except LibraryError as exc:
            out["sidecars"].append({"path": str(sidecar), "ok": False, "problem": str(exc)})
    return out


# ----------------------------------------------------------------------------------- recovery


def sqlite_recover_available() -> bool:
    """True when a ``sqlite3`` program on the PATH can run ``.recover`` (some builds, e.g.
    Debian 12's 3.40.1, lack the ``sqlite_dbpage`` table it needs)."""
    exe = shutil.which("sqlite3")
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, ":memory:", ".recover"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and b"error" not in proc.stderr.lower()


def _recover_with_sqlite(damaged: Path, target: Path) -> bool:
    """``sqlite3 damaged .recover | sqlite3 target``; True when it produced a database."""
    exe = shutil.which("sqlite3")
    if exe is None or not sqlite_recover_available():
        return False
    target.unlink(missing_ok=True)
    with subprocess.Popen([exe, str(damaged), ".recover"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as dump:
        load = subprocess.run([exe, str(target)], stdin=dump.stdout, capture_output=True)
        dump.stdout.close()  # type: ignore[union-attr]
        dump.wait()
    if dump.returncode != 0 or load.returncode != 0 or not target.exists():
        target.unlink(missing_ok=True)
        return False
    con = sqlite3.connect(str(target), isolation_level=None)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "tracks" not in tables or "meta" not in tables:
            return False
        for name in tables:
            if name.startswith("lost_and_found"):
                con.execute(f'DROP TABLE "{name}"')
    finally:
        con.close()
    return True


def _rows(con: sqlite3.Connection, table: str, cols: list[str], lost: list[str]) -> Any:
    """Yield the rows of ``table`` that can be read, in rowid order, skipping damage.

    Rows are read in batches; when a batch fails, the rows before the damage are read one at
    a time, then the reading skips ahead (to rowids 1, 2, 4... past the last row read) until
    the b-tree can be read again.
    """
    columns = ", ".join(cols)
    select = f'SELECT rowid, {columns} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT ?'
    # a probe seeks its rowid itself: "rowid > n" would step through the damaged page at n
    probe_at = f'SELECT rowid, {columns} FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT ?'
    last: int | None = None  # rowid of the last row read
    batch = _BATCH
    while True:
        try:
            rows = con.execute(select, (-(2 ** 63) if last is None else last, batch)).fetchall()
        except sqlite3.DatabaseError:
            if batch > 1:
                batch = 1  # creep up to the damaged page, row by row
                continue
            base = 0 if last is None else last
            step = 1
            while True:
                probe = base + step
                if probe >= 2 ** 62:
                    lost.append(f"{table}: the rows after rowid {base} could not be read")
                    return
                try:
                    rows = con.execute(probe_at, (probe, batch)).fetchall()
                    break
                except sqlite3.DatabaseError:
                    step *= 2
            first = rows[0][0] if rows else None
            if first == base + 2:
                lost.append(f"{table}: the row with rowid {base + 1} could not be read")
            else:
                lost.append(f"{table}: the rows with rowids {base + 1} to "
                            f"{first - 1 if first is not None else 'the end'} could not be read")
        if not rows:
            return
        for row in rows:
            yield row[1:]
        last = rows[-1][0]
        batch = _BATCH


def _salvage(damaged: Path, target: Path) -> list[str]:
    """Copy what can be read of ``damaged`` into a new database at ``target`` (current
    schema); returns one line per stretch of rows that could not be read."""
    from deejai.engine.library import Library, state_file

    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    lost: list[str] = []
    new = Library(target)
    new.close()
    state_file(target).unlink(missing_ok=True)
    src = _connect(damaged)
    dst = sqlite3.connect(str(target), isolation_level=None)
    try:
        dst.execute("PRAGMA foreign_keys = OFF")
        dst.execute("BEGIN")
        for table in _TABLES:
            try:
                have = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
            except sqlite3.DatabaseError:
                lost.append(f"{table}: the table could not be read")
                continue
            want = [r[1] for r in dst.execute(f'PRAGMA table_info("{table}")')]
            cols = [c for c in want if c in have]
            if not cols:
                continue
            insert = (f'INSERT OR REPLACE INTO "{table}" ({", ".join(cols)}) '
                      f'VALUES ({", ".join("?" for _ in cols)})')
            batch: list[tuple] = []
            for row in _rows(src, table, cols, lost):
                batch.append(tuple(row))
                if len(batch) >= _BATCH:
                    dst.executemany(insert, batch)
                    batch.clear()
            if batch:
                dst.executemany(insert, batch)
        dst.execute("UPDATE tracks SET error_kind = CASE WHEN error LIKE 'worker process % died%' "
                    "THEN 'transient' ELSE 'permanent' END "
                    "WHERE status = 'error' AND error_kind IS NULL")
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()
    return lost


def _tidy(target: Path) -> None:
    """Drop references to rows the recovery lost and bump the revision (so every cache of the
    old file is rebuilt)."""
    con = sqlite3.connect(str(target), isolation_level=None)
    try:
        con.execute("BEGIN")
        con.execute("DELETE FROM vectors WHERE track_id NOT IN (SELECT id FROM tracks)")
        con.execute("DELETE FROM tags WHERE track_id NOT IN (SELECT id FROM tracks)")
        con.execute("UPDATE tracks SET duplicate_of = NULL "
                    "WHERE duplicate_of IS NOT NULL AND duplicate_of NOT IN (SELECT id FROM tracks)")
        con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
        con.execute("COMMIT")
        con.execute("VACUUM")
    finally:
        con.close()


def _count(db: Path) -> int:
    con = sqlite3.connect(str(db))
    try:
        return int(con.execute("SELECT count(*) FROM tracks WHERE status = 'ok'").fetchone()[0])
    finally:
        con.close()


def recover(db: str | os.PathLike, *, use_sqlite: bool = True) -> dict[str, Any]:
    """Rebuild a damaged library database from what it still holds, and put it in place.

    The caller must make sure nothing else has the library open (the daemon stopped, no
    scan running): the files are renamed under it.

    Parameters
    ----------
    db : path
        The damaged database.
    use_sqlite : bool
        Try ``sqlite3 .recover`` first when a working one is on the PATH.

    Returns
    -------
    dict
        ``method`` ("sqlite3 .recover" or "salvage copy"), ``tracks`` (ok tracks in the new
        database), ``expected`` (ok tracks the state file last recorded, or None), ``lost``
        (lines about rows that could not be read), ``kept`` (where the damaged file now is).

    Raises
    ------
    LibraryError
        When the recovered database fails its integrity check (nothing was replaced).
    """
    from deejai.engine.library import Library, _read_state

    path = Path(db).expanduser().absolute()
    target = path.with_name(f"{path.stem}.recovered{path.suffix}")
    lost: list[str] = []
    method = "sqlite3 .recover"
    if not (use_sqlite and _recover_with_sqlite(path, target)):
        method = "salvage copy"
        lost = _salvage(path, target)
    _tidy(target)
    problem = _integrity(target)
    if problem != "ok":
        raise LibraryError(f"{target}: the recovered database is damaged too ({problem}); "
                           f"{path} was left as it was")
    private_file(target)
    expected = (_read_state(path) or {}).get("tracks")
    kept = path.with_name(f"{path.name}.damaged-{_stamp()}")
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, str(kept) + suffix)
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(target, path)
    tighten(path, PRIVATE_FILE_MODE)
    for sidecar in _sidecars(path):
        sidecar.unlink(missing_ok=True)  # a cache of the old file: rebuilt from the new one
    with Library(path) as lib:  # migrates a recovered older schema, rewrites the state file
        tracks = int(lib.stats()["tracks"])
        lib._record_state(tracks=tracks)
    return {"method": method, "tracks": tracks, "expected": expected, "lost": lost,
            "kept": str(kept)}


def reset(db: str | os.PathLike) -> dict[str, Any]:
    """Move an emptied (0-byte) or damaged database aside, with its state file and index
    sidecars, so that the next start makes a new, empty library.

    Returns
    -------
    dict
        ``kept``: where the old database now is (None when there was none).
    """
    from deejai.engine.library import state_file

    path = Path(db).expanduser().absolute()
    kept = None
    if path.exists():
        kept = path.with_name(f"{path.name}.old-{_stamp()}")
        os.replace(path, kept)
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.replace(side, str(kept) + suffix)
    state = state_file(path)
    if state.exists():
        os.replace(state, f"{state}.old-{_stamp()}")
    for sidecar in _sidecars(path):
        sidecar.unlink(missing_ok=True)
    return {"kept": str(kept) if kept else None}


def describe(report: dict[str, Any]) -> list[str]:
    """The lines ``deejai doctor`` prints for a :func:`diagnose` report."""
    lines = []
    state = report.get("state") or {}
    db = report["database"]
    where = report["path"]
    if db == "ok":
        lines.append(f"{where}: ok ({report['size'] / 1e6:.1f} MB)")
    elif db == "missing":
        lines.append(f"{where}: no library yet (it is made by the first `deejai scan`)")
    elif db == "new":
        lines.append(f"{where}: an empty new library")
    elif db == "emptied":
        n = state.get("tracks")
        lines.append(f"{where}: the file is empty (0 bytes), but "
                     f"{'a library of %d tracks' % n if isinstance(n, int) else 'a library'} "
                     "was here; restore it from a backup, or `deejai doctor --reset` starts a "
                     "new library (the empty file is kept aside)")
    else:
        lines.append(f"{where}: damaged ({report['problem']}); `deejai doctor --recover` "
                     "rebuilds it from what it still holds (the damaged file is kept)")
    for side in report.get("sidecars") or []:
        if not side["ok"]:
            lines.append(f"{side['problem']} (a cache: the next playlist or scan rebuilds it)")
    return lines


def dumps(report: dict[str, Any]) -> str:
    """``report`` as JSON text."""
    return json.dumps(report, indent=2, ensure_ascii=False)
