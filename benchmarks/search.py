"""The one search rule at library scale: ``Library.tracks(query)`` and track resolution.

Writes ``--tracks`` synthetic track rows (accented artist names, titles, albums; no audio,
no vectors) into a fresh library, then prints:

* the first query after a change (reads the rows and folds them: the per-revision cost);
* later queries (the search index is cached per library revision): median and p99 over a
  mix of one-word, two-word, accent-free and no-match queries, ``limit=50`` as
  ``deejai tracks`` asks;
* ``resolve_track`` for an exact "artist title" query, the way ``--from`` resolves.

Usage::

    python benchmarks/search.py                  # 100,000 tracks
    python benchmarks/search.py --tracks 20000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ARTISTS = ["Björk", "Sigur Rós", "Ólafur Arnalds", "Motörhead", "Beyoncé", "Mötley Crüe",
           "Kraftwerk", "Daft Punk", "Nexuiz", "Zoë Keating", "Amon Tobin", "Ásgeir"]
WORDS = ["jóga", "hoppípolla", "straße", "café", "noir", "epic", "battle", "ambient",
         "frontiers", "night", "señor", "über", "déjà", "vu", "blue", "garden"]


def build(path: Path, n: int) -> float:
    from deejai.engine.library import Library

    t0 = time.perf_counter()
    with Library(path) as lib, lib.transaction():
        rows = []
        for i in range(n):
            artist = f"{ARTISTS[i % len(ARTISTS)]} {i % 997}"
            title = f"{WORDS[i % len(WORDS)].title()} {WORDS[(i * 7) % len(WORDS)]} {i}"
            album = f"{WORDS[(i * 3) % len(WORDS)].title()} {i % 1500}"
            rows.append((f"/music/{artist}/{album}/{i:06d} {title}.mp3", 4_000_000 + i,
                         1_700_000_000_000_000_000 + i, 200.0, title, artist, album,
                         (i % 12) + 1))
        lib.conn.executemany(
            "INSERT INTO tracks (path, size, mtime_ns, duration_s, title, artist, album, "
            "tracknumber, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ok')", rows)
        lib._next_revision()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30, help="times each query is run")
    args = ap.parse_args(argv)

    from deejai.engine.library import Library
    from deejai.engine.resolve import resolve_track

    with tempfile.TemporaryDirectory(prefix="deejai-bench-search-") as tmp:
        db = Path(tmp) / "library.sqlite"
        secs = build(db, args.tracks)
        print(f"{args.tracks} synthetic tracks written in {secs:.1f} s; python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        with Library(db) as lib:
            t0 = time.perf_counter()
            first = lib.tracks("bjork", limit=50)
            print(f"first query after a change (read + fold {args.tracks} rows): "
                  f"{1000 * (time.perf_counter() - t0):.0f} ms, {len(first)} rows")
            queries = ["bjork", "sigur ros jóga", "MOTORHEAD cafe", "strasse", "ogenic",
                       "zoe keating garden 12", "no such words anywhere", "olafur"]
            for q in queries:
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    rows = lib.tracks(q, limit=50)
                    times.append(1000 * (time.perf_counter() - t0))
                times.sort()
                p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
                print(f"  tracks({q!r}, limit=50): median {statistics.median(times):.1f} ms, "
                      f"p99 {p99:.1f} ms, {len(rows)} rows")
            records = lib.records()
            target = records[len(records) // 2]
            spec = f"{target['artist']} {target['title']}"
            t0 = time.perf_counter()
            resolve_track(spec, records)
            first_ms = 1000 * (time.perf_counter() - t0)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                assert resolve_track(spec, records) == target["id"]
                times.append(1000 * (time.perf_counter() - t0))
            print(f"resolve_track({spec!r}): first {first_ms:.0f} ms (folds the records), "
                  f"then median {statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
