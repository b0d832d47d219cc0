"""Playlist latency: join and radio on a 1,000,000 x 200 library, and the whole CLI command.

Prints figures, asserts nothing. Two parts:

1. **Engine** — ``deejai.engine.playlist.join`` (two waypoints, ``n`` between, default 10) and
   ``radio`` (``n`` 20) over a synthetic library of ``--tracks`` clustered unit vectors (default
   1,000,000 x 200 float32) held in the FAISS index that :class:`deejai.engine.index.FaissIndex`
   builds for that size (``structure="auto"``: HNSW from ``HNSW_THRESHOLD`` vectors on, else
   flat; ``--structure`` forces one). Latency per call, p50 / p99 over ``--queries`` random
   waypoint pairs / seeds, measured in process (no process start, index already built), once
   with FAISS's default OpenMP threads and once with one thread (``--omp-threads``).
2. **CLI** — the whole ``deejai playlist --from ... --to ... -n 8`` command, run in process with
   click's runner against a ``--cli-tracks`` (default 10,000) track library written through
   :class:`deejai.engine.library.Library` (synthetic vectors, tags and paths; no audio), with
   ``--no-daemon``: engine start, SQLite catalogue load, index sidecar load, name resolution,
   join, table output. The first run also builds the index sidecar (reported apart).

Usage::

    python benchmarks/latency.py                       # everything, 1M tracks
    python benchmarks/latency.py --tracks 200000 --skip-cli
    python benchmarks/latency.py --index-cache ~/bench/idx-1m.faiss   # reuse the built index
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from deejai.models import DEFAULT_MODEL


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, spread: float = 0.9) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random centres (float32, (n, dim)), in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        which = rng.integers(0, clusters, m)
        x = centres[which] + spread * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def percentiles(samples_s: list[float]) -> str:
    a = np.asarray(samples_s) * 1000
    return (f"p50 {np.percentile(a, 50):7.2f} ms   p99 {np.percentile(a, 99):7.2f} ms   "
            f"mean {a.mean():7.2f} ms   max {a.max():7.2f} ms   (n={len(a)})")


def engine_part(args: argparse.Namespace) -> None:
    from deejai.engine import playlist as pl
    from deejai.engine.catalogue import Catalogue
    from deejai.engine.index import FaissIndex, HNSW_THRESHOLD

    n, dim = args.tracks, args.dim
    t0 = time.perf_counter()
    vectors = clustered_vectors(n, dim, args.clusters, args.seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    rng = np.random.default_rng(args.seed + 1)
    cat = Catalogue(
        ids=ids, vectors=vectors,
        duration_s=rng.uniform(90, 480, n).astype(np.float32),
        artist=[f"artist {i % (n // 12 + 1)}" for i in range(n)],
        audio_hash=[f"{i:012x}" for i in range(n)],
    )
    print(f"library: {n:,} x {dim} float32 ({vectors.nbytes / 2**20:.0f} MiB), "
          f"{args.clusters} clusters, made in {time.perf_counter() - t0:.1f} s")

    structure = args.structure
    if structure == "auto":
        structure = "hnsw" if n >= HNSW_THRESHOLD else "flat"
    index = None
    cache = Path(args.index_cache).expanduser() if args.index_cache else None
    if cache is not None and cache.exists():
        import faiss

        t0 = time.perf_counter()
        index = FaissIndex(dim, structure)
        index._index = faiss.read_index(str(cache))
        print(f"index: loaded {cache} ({index.ntotal:,} vectors) in {time.perf_counter() - t0:.1f} s")
    if index is None or index.ntotal != n:
        t0 = time.perf_counter()
        index = FaissIndex.build(ids, vectors, structure=structure)
        print(f"index: built FaissIndex kind={index.kind} over {index.ntotal:,} vectors "
              f"in {time.perf_counter() - t0:.1f} s")
        if cache is not None:
            import faiss

            cache.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(index._index, str(cache))
    if args.build_only:
        return
    if structure == "hnsw":
        from deejai.engine.index import HNSW_EF_SEARCH, HNSW_M

        print(f"  HNSW M={HNSW_M}, efSearch={HNSW_EF_SEARCH}")
    try:
        import faiss

        print(f"  faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
              f"{os.cpu_count()} CPUs")
    except Exception:  # pragma: no cover - informative only
        pass

    pairs = [tuple(int(x) for x in rng.choice(ids, 2, replace=False)) for _ in range(args.queries)]
    for a, b in pairs[:5]:  # warm up
        pl.join(cat, index, [a, b], args.join_n)

    def timed(fn) -> list[float]:
        out = []
        for a, b in pairs:
            t = time.perf_counter()
            fn(a, b)
            out.append(time.perf_counter() - t)
        return out

    lengths = set()

    def run_join(a, b, **kw):
        lengths.add(len(pl.join(cat, index, [a, b], args.join_n, **kw)))

    def run_radio(a, b, **kw):
        lengths.add(len(pl.radio(cat, index, [a], args.radio_n, **kw)))

    import faiss

    default_threads = faiss.omp_get_max_threads()
    for setting in args.omp_threads.split(","):
        threads = default_threads if setting == "default" else int(setting)
        faiss.omp_set_num_threads(threads)
        print(f"-- FAISS OpenMP threads: {threads} ({setting})")
        print(f"join  (2 waypoints, n_between={args.join_n}):          " + percentiles(timed(run_join)))
        print("join  (+ noise 0.3, no repeat artist, max 300 s): " + percentiles(timed(
            lambda a, b: run_join(a, b, noise=0.3, seed=a,
                                  constraints=pl.Constraints(no_repeat_artist=True, max_duration_s=300))
        )))
        print(f"radio (1 seed, n={args.radio_n}, lookback 3):              " + percentiles(timed(run_radio)))
        print("radio (+ noise 0.3, no repeat artist):             " + percentiles(timed(
            lambda a, b: run_radio(a, b, noise=0.3, seed=a,
                                   constraints=pl.Constraints(no_repeat_artist=True))
        )))
    faiss.omp_set_num_threads(default_threads)
    print(f"playlist lengths seen: {sorted(lengths)}")


def build_cli_library(home: Path, n: int, dim: int, seed: int) -> None:
    """Write ``n`` synthetic tracks (vectors, intro/outro, tags) through the Library API."""
    from deejai.engine.config import paths
    from deejai.engine.library import Library

    os.environ["DEEJAI_HOME"] = str(home)
    p = paths().ensure()
    vectors = clustered_vectors(n, dim, max(10, n // 100), seed)
    rng = np.random.default_rng(seed)
    lib = Library(p.library_file)
    with lib.transaction():
        for i in range(n):
            v = vectors[i]
            lib.save_analysis(SimpleNamespace(
                path=str(home / "music" / f"artist {i % 500:03d}" / f"track {i:05d}.mp3"),
                size=4_000_000, mtime_ns=1, duration_s=float(rng.uniform(90, 480)),
                tags={"artist": f"Artist {i % 500:03d}", "title": f"Track {i:05d}",
                      "album": f"Album {i % 900:03d}"},
                audio_hash=f"{i:016x}", model=DEFAULT_MODEL, vector=v, intro=v, outro=v,
                patch_vectors=np.zeros((3, dim), np.float32), tag_probs=None,
            ))
    lib.close()


def cli_part(args: argparse.Namespace) -> None:
    from click.testing import CliRunner

    with tempfile.TemporaryDirectory(prefix="deejai-latency-") as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        build_cli_library(home, args.cli_tracks, args.dim, args.seed)
        print(f"\nCLI library: {args.cli_tracks:,} tracks written through Library in "
              f"{time.perf_counter() - t0:.1f} s")
        from deejai.ui_cli.main import cli

        runner = CliRunner()
        env = {"DEEJAI_HOME": str(home), "DEEJAI_NO_DAEMON": "1"}
        rng = np.random.default_rng(args.seed + 2)
        times = []
        for run in range(args.cli_runs + 1):
            a, b = (int(x) for x in rng.choice(args.cli_tracks, 2, replace=False))
            argv = ["playlist", "--from", f"track {a:05d}", "--to", f"Track {b:05d}", "-n", "8"]
            t = time.perf_counter()
            result = runner.invoke(cli, argv, env=env, catch_exceptions=False)
            dt = time.perf_counter() - t
            if result.exit_code != 0:
                print(result.output)
                raise SystemExit(f"deejai playlist failed with exit code {result.exit_code}")
            if run == 0:
                print(f"deejai playlist (first run, builds the index sidecar): {dt * 1000:.0f} ms")
            else:
                times.append(dt)
        print("deejai playlist (in process, sidecar present):   " + percentiles(times))
        print("  e.g. " + " ".join(argv))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--join-n", type=int, default=10)
    ap.add_argument("--radio-n", type=int, default=20)
    ap.add_argument("--structure", choices=("auto", "flat", "hnsw"), default="auto")
    ap.add_argument("--index-cache", default=None, help="FAISS index file to reuse/write")
    ap.add_argument("--omp-threads", default="default,1",
                    help="comma-separated FAISS OpenMP thread counts to measure under ('default' "
                         "is FAISS's own choice); playlist searches are batches of 1-10 queries, "
                         "where OpenMP start-up can cost more than it saves")
    ap.add_argument("--cli-tracks", type=int, default=10_000)
    ap.add_argument("--cli-runs", type=int, default=10)
    ap.add_argument("--build-only", action="store_true",
                    help="only build (and with --index-cache save) the index, then stop")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    if not args.skip_engine:
        engine_part(args)
    if not args.skip_cli:
        cli_part(args)


if __name__ == "__main__":
    main()
