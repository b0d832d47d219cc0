"""Join-the-dots path quality: deejai's beam search against two greedy baselines.

Prints figures, asserts nothing. For ``--pairs`` random (A, B) pairs and ``-n`` tracks between
them, three methods make a path:

``deejai``
    :func:`deejai.engine.playlist.join` (slerp points, candidates from the index, beam search
    with hard constraints).
``deej-ai greedy``
    Deej-A.I.'s join the dots (teticio): points on the straight line between A and B
    (``(1 - t) a + t b``), each snapped to the nearest track not yet in the playlist (track ids
    only: a re-encoded copy of a track is a different track to it).
``audiomuse``
    The AudioMuse-AI style: slerp points; each takes the first of its 10 nearest tracks that
    is not yet used and not a near-duplicate (same audio hash or cosine above
    ``1 - near_duplicate_eps``) of a used one; a point whose 10 neighbours all fail is
    skipped, so the path can come out short.

Per method: mean and max step distance (cosine distance, averaged over pairs), the share of steps
that get closer to B, the share of paths with the requested length, and the paths holding a
duplicate (a track twice, or two tracks with the same audio hash / cosine above
``1 - eps``). Then the share of pairs where deejai's longest step is shorter than both
baselines' (and shorter or equal).

Libraries:

* ``--home DIR``: the scanned library at a DEEJAI_HOME (e.g. the real corpus after
  ``DEEJAI_HOME=DIR deejai scan CORPUS``), read through :class:`deejai.engine.library.Library`
  and :func:`deejai.engine.index.open_index`;
* ``--synthetic N`` (default 100,000): N clustered unit vectors (200-d) on the sphere, 2% of
  them near-duplicates (re-encodings: same hash, tiny vector change), in a FAISS index
  (``--structure``: flat = exact by default, or hnsw / auto as ``open_index`` would choose).

Usage::

    python benchmarks/paths.py --home ~/deejai-corpus-home
    python benchmarks/paths.py --synthetic 100000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Stats:
    name: str
    mean_step: list[float] = field(default_factory=list)
    max_step: list[float] = field(default_factory=list)
    closer: int = 0
    steps: int = 0
    full_length: int = 0
    duplicates: int = 0
    paths: int = 0
    seconds: float = 0.0

    def add(self, cat, ids: list[int], b: int, length: int, eps: float) -> float:
        from deejai.engine import playlist as pl

        rows = cat.rows(ids)
        steps = np.asarray(pl.step_distances(cat, ids)[1:])
        self.paths += 1
        self.mean_step.append(float(steps.mean()) if len(steps) else 0.0)
        self.max_step.append(float(steps.max()) if len(steps) else 0.0)
        to_b = cat.vectors[rows] @ cat.vectors[cat.row(b)]
        self.closer += int((np.diff(to_b) > 0).sum())
        self.steps += len(rows) - 1
        self.full_length += len(ids) == length
        sims = cat.vectors[rows] @ cat.vectors[rows].T
        np.fill_diagonal(sims, -1)
        hashes = [cat.audio_hash[r] for r in rows]
        dup = len(set(ids)) < len(ids) or len(set(h for h in hashes if h)) < sum(1 for h in hashes if h)
        dup = dup or bool((sims > 1 - eps).any())
        self.duplicates += dup
        return self.max_step[-1]

    def line(self) -> str:
        return (f"{self.name:<16} mean step {np.mean(self.mean_step):.4f}   "
                f"max step {np.mean(self.max_step):.4f} (worst {np.max(self.max_step):.4f})   "
                f"closer to B {self.closer / max(1, self.steps):6.1%}   "
                f"full length {self.full_length / max(1, self.paths):6.1%}   "
                f"with duplicates {self.duplicates / max(1, self.paths):6.1%}   "
                f"{1000 * self.seconds / max(1, self.paths):7.1f} ms/path")


def greedy_deejai(cat, index, a: int, b: int, n: int) -> list[int]:
    """Deej-A.I.'s join: linear interpolation, each point to the nearest unused track id."""
    va, vb = cat.vectors[cat.row(a)], cat.vectors[cat.row(b)]
    used = {a, b}
    out = [a]
    t = np.arange(1, n + 1) / (n + 1)
    points = ((1 - t)[:, None] * va + t[:, None] * vb).astype(np.float32)
    k = n + 8
    _, ids = index.search(points, k)
    for j in range(n):
        pick = next((int(i) for i in ids[j] if i >= 0 and int(i) not in used), None)
        if pick is None:  # cannot happen with k > n + 2, kept for safety
            continue
        used.add(pick)
        out.append(pick)
    return out + [b]


def audiomuse_style(cat, index, a: int, b: int, n: int, eps: float) -> list[int]:
    """Slerp points; first of the 10 nearest that is unused and no near-duplicate, else skip."""
    from deejai.engine import playlist as pl

    va, vb = cat.vectors[cat.row(a)], cat.vectors[cat.row(b)]
    points = pl.slerp(va, vb, np.arange(1, n + 1) / (n + 1))
    _, ids = index.search(points, 10)
    out = [a]
    used_rows = [cat.row(a), cat.row(b)]
    used_hashes = {cat.audio_hash[r] for r in used_rows if cat.audio_hash[r]}
    for j in range(n):
        for i in ids[j]:
            if i < 0 or int(i) in out or int(i) == b:
                continue
            r = cat.row(int(i))
            h = cat.audio_hash[r]
            if (h and h in used_hashes) or (cat.vectors[used_rows] @ cat.vectors[r] > 1 - eps).any():
                continue
            out.append(int(i))
            used_rows.append(r)
            if h:
                used_hashes.add(h)
            break
    return out + [b]


def compare(cat, index, pairs, n: int, label: str) -> None:
    from deejai.engine import playlist as pl

    eps = pl.DEFAULT_NEAR_DUPLICATE_EPS
    length = n + 2
    ours, greedy, muse = Stats("deejai"), Stats("deej-ai greedy"), Stats("audiomuse")
    below = below_or_equal = 0
    errors = 0
    for a, b in pairs:
        t = time.perf_counter()
        try:
            p = pl.join(cat, index, [a, b], n)
        except Exception as exc:  # a pair the library cannot serve: counted, not fatal
            errors += 1
            print(f"  deejai failed on ({a}, {b}): {exc}")
            continue
        ours.seconds += time.perf_counter() - t
        m0 = ours.add(cat, p, b, length, eps)
        t = time.perf_counter()
        g = greedy_deejai(cat, index, a, b, n)
        greedy.seconds += time.perf_counter() - t
        m1 = greedy.add(cat, g, b, length, eps)
        t = time.perf_counter()
        s = audiomuse_style(cat, index, a, b, n, eps)
        muse.seconds += time.perf_counter() - t
        m2 = muse.add(cat, s, b, length, eps)
        below += m0 < min(m1, m2) - 1e-9
        below_or_equal += m0 <= min(m1, m2) + 1e-9
    done = ours.paths
    print(f"\n{label}: {len(pairs)} pairs, n={n} between (paths of {length})"
          + (f", deejai failed on {errors}" if errors else ""))
    for st in (ours, greedy, muse):
        print("  " + st.line())
    print(f"  deejai's max step below both baselines' in {below / max(1, done):.1%} of pairs "
          f"(below or equal: {below_or_equal / max(1, done):.1%})")


def random_pairs(ids: np.ndarray, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(x) for x in rng.choice(ids, 2, replace=False)) for _ in range(count)]


def real_library(home: str):
    from deejai.engine.config import load_settings, paths
    from deejai.engine.index import open_index
    from deejai.engine.library import Library

    os.environ["DEEJAI_HOME"] = os.path.expanduser(home)
    p = paths()
    if not p.library_file.exists():
        raise SystemExit(f"{p.library_file}: no library; scan a corpus with DEEJAI_HOME={home} first")
    model = str(load_settings(p)["model"])
    lib = Library(p.library_file)
    cat = lib.catalogue(model)
    index = open_index(lib, model, save=False)
    return cat, index


def synthetic_library(n: int, dim: int, clusters: int, seed: int, structure: str):
    from deejai.engine.catalogue import Catalogue, l2_normalise
    from deejai.engine.index import FaissIndex

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from latency import clustered_vectors

    vectors = clustered_vectors(n, dim, clusters, seed)
    rng = np.random.default_rng(seed + 1)
    hashes = [f"{i:012x}" for i in range(n)]
    copies = rng.choice(n, size=(n // 50, 2), replace=False) if n >= 100 else np.zeros((0, 2), int)
    for src, dst in copies:
        vectors[dst] = l2_normalise(vectors[src] + 2e-3 * rng.standard_normal(dim) / np.sqrt(dim))
        hashes[dst] = hashes[src]
    ids = rng.permutation(np.arange(1, 2 * n + 1))[:n]
    cat = Catalogue(ids=ids, vectors=vectors, duration_s=rng.uniform(90, 480, n).astype(np.float32),
                    artist=[f"artist {i % (n // 10 + 1)}" for i in range(n)], audio_hash=hashes)
    t = time.perf_counter()
    index = FaissIndex.build(ids, vectors, structure=structure)
    print(f"synthetic library: {n:,} x {dim}, {clusters} clusters, {len(copies)} near-duplicates; "
          f"index {index.kind} built in {time.perf_counter() - t:.1f} s")
    return cat, index


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=None, help="DEEJAI_HOME of a scanned library")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N",
                    help="synthetic library size (default 100000 when --home is not given)")
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--structure", choices=("flat", "hnsw", "auto"), default="flat")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.home:
        cat, index = real_library(args.home)
        print(f"library at {args.home}: {len(cat)} tracks, dim {cat.dim}, index {getattr(index, 'kind', '?')}")
        compare(cat, index, random_pairs(cat.ids, args.pairs, args.seed), args.n, "real library")
    if args.synthetic or not args.home:
        n = args.synthetic or 100_000
        cat, index = synthetic_library(n, args.dim, args.clusters, args.seed, args.structure)
        compare(cat, index, random_pairs(cat.ids, args.pairs, args.seed), args.n,
                f"synthetic {n:,}")


if __name__ == "__main__":
    main()
