"""What trusting nothing costs: the sidecar check, the scan's quick check, a recovery.

Prints figures, asserts nothing. For each library size N it writes a synthetic library (N
ok tracks, each with a 200-d track vector, intro and outro, as a scan stores them) and times

* ``open_index`` when the sidecar must be built (the first playlist after a scan that
  changed everything, or a damaged sidecar), and when it is loaded and checked against
  SQLite (every later open: the checksum of SQLite's vectors and the comparison of every
  stored vector), with the peak memory the check adds (``tracemalloc``);
* ``PRAGMA quick_check``, which a scan runs before it writes;
* ``deejai doctor --recover``'s salvage copy of the whole file.

Usage::

    python benchmarks/integrity.py
    python benchmarks/integrity.py --sizes 10000,100000
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def synthetic_library(path: Path, n: int, dim: int, model: str) -> None:
    """A library file of ``n`` ok tracks with vectors, written with plain SQL (fast)."""
    from deejai.engine.library import Library

    Library(path).close()  # the schema, the meta rows, the state file
    rng = np.random.default_rng(0)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN")
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        con.executemany(
            "INSERT INTO tracks (id, path, size, mtime_ns, audio_hash, duration_s, status) "
            "VALUES (?, ?, 1000, 0, ?, 180.0, 'ok')",
            [(i + 1, f"/music/{i:07d}.mp3", f"{i:032x}") for i in range(start, start + m)])
        vecs = rng.standard_normal((m, 3, dim)).astype("<f4")
        con.executemany(
            "INSERT INTO vectors (track_id, model, vector, intro, outro, n_patches, revision) "
            "VALUES (?, ?, ?, ?, ?, 16, 1)",
            [(start + j + 1, model, v[0].tobytes(), v[1].tobytes(), v[2].tobytes())
             for j, v in enumerate(vecs)])
    con.execute("UPDATE meta SET value = '1' WHERE key = 'revision'")
    con.execute("COMMIT")
    con.close()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--dim", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from deejai.engine import doctor
    from deejai.engine.index import open_index, sidecar_path
    from deejai.engine.library import Library

    model = "bench-model"
    print(f"{'tracks':>8} {'MB':>6} {'build s':>8} {'check s':>8} {'check MB':>9} "
          f"{'quick_check s':>14} {'salvage s':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "library.sqlite"
            synthetic_library(db, n, args.dim, model)
            size_mb = db.stat().st_size / 1e6
            with Library(db) as lib:
                sidecar_path(lib, model).unlink(missing_ok=True)
                _, build_s = timed(lambda: open_index(lib, model))
                tracemalloc.start()
                _, check_s = timed(lambda: open_index(lib, model))
                peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
                lib._healthy = False
                _, quick_s = timed(lib.require_healthy)
            _, salvage_s = timed(lambda: doctor._salvage(db, Path(tmp) / "copy.sqlite"))
            print(f"{n:>8} {size_mb:>6.0f} {build_s:>8.2f} {check_s:>8.2f} {peak_mb:>9.0f} "
                  f"{quick_s:>14.2f} {salvage_s:>10.2f}")


if __name__ == "__main__":
    main()
