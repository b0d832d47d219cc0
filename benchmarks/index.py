"""Where HNSW beats the exact flat index: build time, query latency and recall@10 against size.

Prints figures, asserts nothing. For each library size N (default 1k..200k) it builds
:class:`deejai.engine.index.FaissIndex` both ways — exact ``flat`` and ``hnsw`` (the M,
efConstruction and efSearch of :mod:`deejai.engine.index`) — over N clustered unit vectors of
dimension 200 (music embeddings are clustered by genre and mood, not uniform on the sphere),
and measures

* build time (seconds),
* latency of one query (k=10, the way the playlist code asks), median and p99 in ms,
* recall@10 of HNSW: the share of the exact top 10 that HNSW returns,
* the time :meth:`FaissIndex.remove` takes for one id (HNSW rebuilds its graph).

``HNSW_THRESHOLD`` in :mod:`deejai.engine.index` is set from these figures: the size where a
flat query starts to cost several milliseconds (a join asks a few dozen), weighed against the
HNSW build, which is paid again on every removal (see its comment for the numbers).

Usage::

    python benchmarks/index.py
    python benchmarks/index.py --sizes 1000,10000,100000 --queries 300 --threads 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, spread: float = 0.9) -> np.ndarray:
    """``n`` unit vectors (float32, (n, dim)) scattered around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(0, clusters, n)
    x = centres[which] + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def latency_ms(index, queries: np.ndarray, k: int) -> tuple[float, float, np.ndarray]:
    times = []
    ids = np.empty((len(queries), k), np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, got = index.search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
        ids[i] = got[0]
    return float(np.median(times)), float(np.percentile(times, 99)), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000,20000,50000,100000,200000")
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: default)")
    args = ap.parse_args()

    import faiss

    from deejai.engine import index as index_mod
    from deejai.engine.index import FaissIndex

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}, dim {args.dim}, "
          f"HNSW M={index_mod.HNSW_M} efConstruction={index_mod.HNSW_EF_CONSTRUCTION} "
          f"efSearch={index_mod.HNSW_EF_SEARCH}, current HNSW_THRESHOLD={index_mod.HNSW_THRESHOLD}")
    print(f"{'N':>8} | {'flat build s':>12} {'flat p50 ms':>11} {'flat p99 ms':>11} | "
          f"{'hnsw build s':>12} {'hnsw p50 ms':>11} {'hnsw p99 ms':>11} {'recall@10':>9} "
          f"{'remove 1 s':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        vecs = clustered_vectors(n, args.dim, clusters=max(8, n // 500), seed=n)
        ids = np.arange(n, dtype=np.int64) + 1
        rng = np.random.default_rng(7)
        # queries: perturbed library vectors (a playlist asks near existing tracks)
        q = vecs[rng.integers(0, n, args.queries)] + 0.3 * rng.standard_normal(
            (args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)

        t = time.perf_counter()
        flat = FaissIndex.build(ids, vecs, structure="flat")
        flat_build = time.perf_counter() - t
        f50, f99, exact = latency_ms(flat, q, args.k)

        t = time.perf_counter()
        hnsw = FaissIndex.build(ids, vecs, structure="hnsw")
        hnsw_build = time.perf_counter() - t
        h50, h99, approx = latency_ms(hnsw, q, args.k)
        recall = np.mean([len(set(a) & set(e)) / args.k for a, e in zip(approx, exact)])

        t = time.perf_counter()
        hnsw.remove([ids[0]])
        remove_s = time.perf_counter() - t
        print(f"{n:>8} | {flat_build:>12.3f} {f50:>11.3f} {f99:>11.3f} | "
              f"{hnsw_build:>12.2f} {h50:>11.3f} {h99:>11.3f} {recall:>9.3f} {remove_s:>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
